"""The shard map: partition ranges to PostgreSQL URLs, every partition on one server."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from pachyderm import PachydermError
from pachyderm._settings import Settings
from pachyderm.store import Shard, ShardedEventStore, ShardMap, ShardMapError, SqliteEventStore
from pachyderm.telemetry._store import _system

A, B, C = "postgresql://a/app", "postgresql://b,c:5433/app", "postgresql://d/app"


def test_ranges_written_as_text_or_json_make_the_same_map() -> None:
    text = ShardMap.parse(f"0-3={A}, 4-6={B};7={C}", 8)
    written = ShardMap.parse(f'{{"7": "{C}", "0-3": "{A}", "4-6": "{B}"}}', 8)
    assert text == written
    assert text.shards == (Shard(0, 3, A), Shard(4, 6, B), Shard(7, 7, C))
    # A multi-host URL keeps its commas; one URL may hold several ranges.
    assert [text.url_of(p) for p in (0, 3, 4, 6, 7)] == [A, A, B, B, C]
    assert ShardMap.parse(f"0-1={A} 2-3={B} 4-7={A}", 8).urls == [A, B]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"0-3={A} 5-7={B}", "leaves partition 4 on no server"),
        (f"0-3={A} 4-5={B}", "leaves partitions 6-7 on no server"),
        (f"1-7={A}", "leaves partition 0 on no server"),
        (f"0-4={A} 4-7={B}", "overlap at partition 4"),
        (f"0-8={A}", "goes past the last partition \\(7"),
        (f"3-0={A}", "ends before it starts"),
        ("0-7=mysql://a/app", "needs a postgresql:// URL"),
        (f"first={A}", "is not FIRST-LAST"),
        ("0-7", "is not FIRST-LAST=URL"),
        ("  ", "empty"),
        ('{"0-7": 5}', "needs a URL string"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_map_that_does_not_cover_every_partition_once_is_refused(text: str, problem: str) -> None:
    with pytest.raises(ShardMapError, match=problem) as raised:
        ShardMap.parse(text, 8)
    assert isinstance(raised.value, PachydermError)


def test_the_setting_is_checked_against_the_partition_count_and_never_shown() -> None:
    shards = SecretStr(f"0-7={A}:secret@ 8-15={B}")
    assert Settings(database_shards=shards, partitions=16).shard_map() is not None
    assert Settings().shard_map() is None
    with pytest.raises(ValidationError, match="database_shards") as raised:
        Settings(database_shards=shards, partitions=8)
    assert "secret" not in str(raised.value)


async def test_a_sharded_store_routes_partitions_and_is_traced_as_postgresql() -> None:
    stores = {url: await SqliteEventStore.open(":memory:") for url in (A, C)}
    sharded = ShardedEventStore(ShardMap.parse(f"0-3={A} 4-6={C} 7={A}", 8), stores)
    try:
        assert [sharded.server_of(p) for p in (0, 3, 4, 6, 7)] == [0, 0, 1, 1, 0]
        assert sharded.store_of(5) is stores[C]
        with pytest.raises(ShardMapError, match=r"partition 8 is not in 0\.\.7"):
            sharded.server_of(8)
        assert _system(sharded) == "postgresql"
    finally:
        await sharded.close()
