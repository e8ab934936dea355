"""``pachyderm repartition`` on a store spread over servers by a shard map: refused
before the broker is reached (no servers needed)."""

from __future__ import annotations

import pytest

from pachyderm import PachydermError
from pachyderm._repartition import (
    RepartitionError,
    ShardedRepartitionError,
    refuse_a_shard_map,
)
from pachyderm.cli import main
from pachyderm.store import ShardMap

SHARDS = "0-3=postgresql://a/app 4-7=postgresql://b/app"
# Nothing listens there: a command that went on to the broker would fail otherwise.
NO_BROKER = "amqp://guest:guest@127.0.0.1:1/"


def test_growing_a_sharded_store_is_refused_with_exit_status_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PACHYDERM_DATABASE_SHARDS", SHARDS)
    monkeypatch.setenv("PACHYDERM_PARTITIONS", "8")
    argv = ["--amqp-url", NO_BROKER, "--database-url", "postgresql://a/app"]
    assert main([*argv, "repartition", "--to", "16"]) == 1
    err = capsys.readouterr().err
    assert "shard map (PACHYDERM_DATABASE_SHARDS)" in err
    assert "not supported" in err
    assert "postgresql://" not in err  # the map's URLs may hold passwords


def test_the_refusal_is_a_repartition_error_and_none_without_a_map() -> None:
    refuse_a_shard_map(None)
    with pytest.raises(ShardedRepartitionError) as refused:
        refuse_a_shard_map(ShardMap.parse(SHARDS, 8))
    assert isinstance(refused.value, RepartitionError)
    assert isinstance(refused.value, PachydermError)
