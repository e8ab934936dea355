"""``pachyderm erase`` and ``pachyderm prune-ended`` against a SQLite file, and the
audit line every erasure writes (who, what, how many rows; never the data)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from pachyderm import Ref
from pachyderm.cli import main
from pachyderm.store import ERASED, EventStore, open_store
from pachyderm.worker import Engine

from .membership import APP, Close, Join, Membership, Visit
from .test_engine_ending import request


async def _stored(database: str, work: list[tuple[Ref, object]]) -> EventStore:
    store = await open_store(database)
    await store.migrate()
    await Engine(APP, store).run([request(ref, message) for ref, message in work])
    return store


def _run(database: str, work: list[tuple[Ref, object]]) -> None:
    async def go() -> None:
        await (await _stored(database, work)).close()

    asyncio.run(go())


def _load(database: str, ref: Ref) -> tuple[str | None, int, int]:
    async def go() -> tuple[str | None, int, int]:
        store = await open_store(database)
        try:
            loaded = await store.load(ref)
            return loaded.ended, loaded.version, len(await store.history(ref.id))
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'erase.db'}"


def test_erase_deletes_the_history_and_audits_it(
    database: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    ann = Membership.ref("ann")
    _run(database, [(ann, Join(name="Ann Secret")), (ann, Visit())])
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="pachyderm.audit"):
        code = main(["--database-url", database, "erase", "membership", "ann", "--key", "--yes"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["entity_id"] == str(ann.id)
    assert (printed["version"], printed["events"], printed["commands"]) == (2, 2, 2)
    assert _load(database, ann) == (ERASED, -1, 0)
    [record] = [r for r in caplog.records if r.name == "pachyderm.audit"]
    assert record.__dict__["audit"] == "erase"
    assert record.__dict__["entity_id"] == str(ann.id)
    assert record.__dict__["deleted"]["events"] == 2
    assert "(pachyderm erase)" in record.__dict__["actor"]
    assert "Ann Secret" not in record.getMessage()


def test_erase_without_yes_and_without_a_terminal_is_refused(
    database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ann = Membership.ref("ann")
    _run(database, [(ann, Join(name="ann"))])
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["--database-url", database, "erase", "membership", "ann", "--key"]) == 1
    assert "--yes" in capsys.readouterr().err
    assert _load(database, ann) == (None, 1, 1)


def test_prune_ended_follows_the_policy(
    database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ann, bob = Membership.ref("ann"), Membership.ref("bob")
    _run(
        database,
        [(ann, Join(name="ann")), (ann, Visit()), (ann, Close(reason="x")), (bob, Join(name="b"))],
    )
    capsys.readouterr()
    assert main(["--database-url", database, "prune-ended", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == "would prune 3 events of ended entities"
    assert main(["--database-url", database, "prune-ended"]) == 1  # the default: keep
    assert "PACHYDERM_ENDED_HISTORY" in capsys.readouterr().err
    assert _load(database, ann) == ("ended", 3, 3)
    monkeypatch.setenv("PACHYDERM_ENDED_HISTORY", "prune")
    assert main(["--database-url", database, "prune-ended", "--batch", "2"]) == 0
    assert capsys.readouterr().out.strip() == "pruned 3 events of ended entities"
    assert _load(database, ann) == ("ended", 3, 0)
    assert _load(database, bob) == (None, 1, 1)


def test_inspect_shows_an_ended_entity_s_final_state_after_pruning_and_a_tombstone(
    database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ann, bob = Membership.ref("ann"), Membership.ref("bob")
    _run(database, [(ann, Join(name="ann")), (ann, Close(reason="x")), (bob, Join(name="b"))])
    monkeypatch.setenv("PACHYDERM_ENDED_HISTORY", "prune")
    argv = ["--database-url", database]
    assert main([*argv, "prune-ended"]) == 0
    assert main([*argv, "erase", "membership", "bob", "--key", "--yes"]) == 0
    capsys.readouterr()
    app = ["--app", "tests.ending.membership:APP", "--json"]
    assert main([*argv, "inspect", "membership", "ann", "--key", *app]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["ended"], shown["version"], shown["events"]) == ("ended", 2, [])
    assert shown["state"] == {"name": "ann", "visits": 0, "closed": "x"}
    assert main([*argv, "inspect", "membership", "bob", "--key", *app[:2]]) == 0
    assert "erased" in capsys.readouterr().out
