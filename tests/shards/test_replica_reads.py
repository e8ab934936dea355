"""Reads that tolerate staleness from a hot standby: a shard map whose first range is a
replica serves listing, inspecting and the log (a moment behind, never wrong), and
refuses writes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from pachyderm import Ref, StoreError
from pachyderm.cli import main
from pachyderm.store import Change, NewEvent, ShardedEventStore, ShardMap

from ..waiting import eventually
from .conftest import PARTITIONS
from .servers import standby_of

pytestmark = pytest.mark.shards

STANDBY_PORT = 5784


@pytest.fixture
def replica(shard_urls: list[str], sharded: ShardedEventStore) -> Iterator[str]:
    with standby_of(shard_urls[0], STANDBY_PORT) as url:
        yield url


def _change(key: str, partition: int) -> Change:
    ref = Ref.from_key("counter", key)
    return Change(ref, 0, "c", (NewEvent("Increased", b"\x81\xa6amount\x01"),), partition=partition)


async def test_a_replica_serves_reads_a_moment_behind_and_refuses_writes(
    sharded: ShardedEventStore,
    replica: str,
    shard_urls: list[str],
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The replica stands in for the first server (partitions 0-1) in a map for readers.
    readers_map = ShardMap.parse(
        f"0-1={replica} 2-4={shard_urls[1]} 5-{PARTITIONS - 1}={shard_urls[2]}", PARTITIONS
    )
    readers = await ShardedEventStore.connect(readers_map, schema=namespace, max_size=2)
    try:
        await sharded.commit([_change(f"replicated-{p}", p) for p in (0, 1, 3, 9)])

        async def replicated() -> bool:
            return len(await readers.list_entities("counter")) == 4

        await eventually(replicated, timeout=30, interval=0.05)
        assert (await readers.log_heads()) == {0: 1, 1: 1, 3: 1, 9: 1}
        [logged] = await readers.read_log(1, 0, 10)
        assert logged.event.entity_id == Ref.from_key("counter", "replicated-1").id
        with pytest.raises(StoreError, match="read-only"):
            await readers.commit([_change("written-on-a-replica", 0)])
    finally:
        await readers.close()

    # The read-only commands of the command line, on the replica alone.
    options = ["--database-url", replica, "--namespace", namespace]
    capsys.readouterr()
    assert await asyncio.to_thread(main, [*options, "list", "counter", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["entities"]  # partitions 0-1's only
    expected = {str(Ref.from_key("counter", f"replicated-{p}").id) for p in (0, 1)}
    assert {entity["id"] for entity in listed} == expected
    inspect = [*options, "inspect", "counter", "replicated-0", "--key", "--json"]
    assert await asyncio.to_thread(main, inspect) == 0
    assert await asyncio.to_thread(main, [*options, "migrate"]) == 1  # a standby: refused
