"""The event store over three private PostgreSQL servers, by partition (a shard map)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pachyderm import Ref, StoreUnavailableError
from pachyderm.store import (
    ERASED,
    Change,
    Committed,
    Duplicate,
    Fenced,
    NewEvent,
    Quarantined,
    ShardedEventStore,
    ShardMap,
)
from pachyderm.testing import EventStoreContract, StoreFactory

from ..stores import migrated_stores

pytestmark = pytest.mark.shards


@pytest.fixture
async def open_store(shard_map: ShardMap, namespace: str) -> AsyncIterator[StoreFactory]:
    async with migrated_stores(
        lambda: ShardedEventStore.connect(shard_map, schema=namespace, max_size=2)
    ) as factory:
        yield factory


class TestShardedEventStore(EventStoreContract):
    pass


async def _rows(url: str, namespace: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url, server_settings={"search_path": namespace})
    try:
        return list(await connection.fetch(query))
    finally:
        await connection.close()


def _counter(key: str) -> Ref:
    return Ref.from_key("counter", key)


def _change(ref: Ref, command_id: str, partition: int) -> Change:
    return Change(ref, 0, command_id, (NewEvent("added", b"1"),), partition=partition)


async def test_every_server_is_migrated(
    open_store: StoreFactory, shard_urls: list[str], namespace: str
) -> None:
    version = await (await open_store()).migrate()
    for url in shard_urls:
        applied = await _rows(url, namespace, "SELECT version FROM schema_migrations")
        assert max(row["version"] for row in applied) == version


async def test_a_batch_over_three_servers_commits_each_share_on_its_server(
    open_store: StoreFactory, shard_urls: list[str], namespace: str
) -> None:
    store = await open_store()
    refs = [_counter(f"spread-{partition}") for partition in (0, 3, 9)]
    outcomes = await store.commit(
        [_change(ref, "c", partition) for ref, partition in zip(refs, (0, 3, 9), strict=True)]
    )
    assert all(isinstance(outcome, Committed) for outcome in outcomes)
    for url, ref, partition in zip(shard_urls, refs, (0, 3, 9), strict=True):
        events = await _rows(url, namespace, "SELECT entity_id FROM events")
        logged = await _rows(url, namespace, "SELECT partition FROM event_log")
        assert [row["entity_id"] for row in events] == [ref.id]
        assert [row["partition"] for row in logged] == [partition]


async def test_a_store_that_never_saw_an_entity_finds_it_on_its_server(
    open_store: StoreFactory,
) -> None:
    writer, reader = await open_store(), await open_store()
    ref = _counter("elsewhere")
    await writer.commit([_change(ref, "c1", 12)])
    assert (await reader.load(ref)).version == 1
    assert [event.version for event in await reader.history(ref.id)] == [1]
    assert await reader.versions([ref.id]) == {ref.id: 1}
    [(found, duplicate)] = (await reader.recorded([(ref.id, "c1")])).items()
    assert found == (ref.id, "c1")
    assert isinstance(duplicate, Duplicate)
    # Tried again through the other store (as after a worker's failover): recorded.
    [again] = await reader.commit([_change(ref, "c1", 12)])
    assert isinstance(again, Duplicate)


async def test_listing_pages_through_every_server_in_order(open_store: StoreFactory) -> None:
    store = await open_store()
    refs = [_counter(f"listed-{n}") for n in range(12)]
    await store.commit([_change(ref, "c", n) for n, ref in enumerate(refs)])
    seen: list[uuid.UUID] = []
    after = None
    while page := await store.list_entities("counter", after=after, limit=5):
        seen += [entity.entity_id for entity in page]
        after = page[-1].entity_id
    assert seen == sorted(ref.id for ref in refs)


async def test_the_log_of_each_partition_is_read_on_its_server(open_store: StoreFactory) -> None:
    store = await open_store()
    await store.commit([_change(_counter(f"log-{p}"), "c", p) for p in (1, 2, 15)])
    assert await store.log_heads() == {1: 1, 2: 1, 15: 1}
    for partition in (1, 2, 15):
        [logged] = await store.read_log(partition, 0, 10)
        assert logged.event.entity_id == _counter(f"log-{partition}").id


async def test_erasing_an_entity_written_nowhere_refuses_it_on_every_server(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    ref = _counter("never")
    await store.erase(ref)
    for partition in (0, 3, 9):
        [outcome] = await (await open_store()).commit([_change(ref, f"c{partition}", partition)])
        assert not isinstance(outcome, Committed)
    assert (await store.load(ref)).ended == ERASED


async def test_erasing_an_entity_deletes_its_poison_commands_on_the_coordination_server(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    assert isinstance(store, ShardedEventStore)
    ref = _counter("poisoned")
    await store.commit([_change(ref, "c1", 9)])  # on the third server
    quarantine = store.quarantine_store()  # on the first
    await quarantine.count_attempts([(ref.id, "c2")])
    entry = Quarantined(ref.id, "c2", "counter", 9, "park", "quarantined", 3, "hung", b"m")
    await quarantine.quarantine([entry])
    erasure = await (await open_store()).erase(ref)
    assert (erasure.version, erasure.events, erasure.quarantined) == (1, 1, 2)
    assert await quarantine.find(ref.id, "c2") is None
    assert (await store.load(ref)).ended == ERASED


async def test_the_fence_at_commit_holds_on_the_coordination_server_only(
    open_store: StoreFactory,
) -> None:
    # The documented limit: the quarantine lives on the coordination server, and no
    # transaction spans two servers, so a commit on another server cannot see it.
    store = await open_store()
    assert isinstance(store, ShardedEventStore)
    here, there = _counter("parked-here"), _counter("parked-there")
    quarantine = store.quarantine_store()
    for ref, partition in ((here, 0), (there, 9)):
        entry = Quarantined(ref.id, "p", "counter", partition, "park", "quarantined", 3, "x", b"m")
        await quarantine.quarantine([entry])
    outcomes = await (await open_store()).commit([_change(here, "c", 0), _change(there, "c", 9)])
    assert outcomes == [Fenced(), Committed(1)]


async def test_a_server_that_cannot_be_reached_fails_the_connect(shard_urls: list[str]) -> None:
    nobody = "postgresql://postgres@127.0.0.1:5789/postgres"  # nothing listens there
    shard_map = ShardMap.parse(f"0-7={shard_urls[0]} 8-15={nobody}", 16)
    with pytest.raises(StoreUnavailableError):
        await ShardedEventStore.connect(shard_map, max_size=1)
