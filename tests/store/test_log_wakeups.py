"""Log wake-ups: the in-process generations, and LISTEN/NOTIFY on the real PostgreSQL
across two stores (as across two processes), through a lost listening connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pachyderm import Ref
from pachyderm.store import Change, LocalWakeups, NewEvent, NoWakeups, PostgresEventStore
from pachyderm.store._postgres_wakeups import LogListener, channel, partitions_in, payload

from ..waiting import eventually


async def test_a_wait_since_an_older_generation_returns_at_once() -> None:
    wakeups = LocalWakeups()
    seen = wakeups.generation(1)
    wakeups.committed([1])
    assert wakeups.generation(1) > seen
    assert await wakeups.wait(1, seen, 0.0) is True


async def test_a_commit_wakes_only_its_partitions_waiters() -> None:
    wakeups = LocalWakeups()
    one = asyncio.create_task(wakeups.wait(1, wakeups.generation(1), 10.0))
    two = asyncio.create_task(wakeups.wait(2, wakeups.generation(2), 0.05))
    await asyncio.sleep(0)
    wakeups.committed([1])
    assert await one is True
    assert await two is False


async def test_everything_changed_moves_every_generation_and_wakes_every_waiter() -> None:
    wakeups = LocalWakeups()
    never_seen = wakeups.generation(9)
    waiting = asyncio.create_task(wakeups.wait(3, wakeups.generation(3), 10.0))
    await asyncio.sleep(0)
    wakeups.everything_changed()
    assert await waiting is True
    assert wakeups.generation(9) > never_seen  # a partition nobody had waited on too


async def test_no_wakeups_is_the_polling_interval() -> None:
    wakeups = NoWakeups()
    assert await wakeups.wait(0, wakeups.generation(0), 0.01) is False


def test_the_payload_names_partitions_or_all_when_too_long() -> None:
    assert payload({3, 1, 2}) == "1,2,3"
    assert partitions_in("1,2,3") == [1, 2, 3]
    assert payload(range(5000)) == "*"
    assert partitions_in("*") is None
    assert partitions_in("1,x") is None  # unreadable: everything may have changed


def test_a_long_namespace_still_gets_a_channel_postgresql_accepts() -> None:
    assert channel("bank") == "pachyderm_log.bank"
    long = channel("n" * 63)
    assert len(long) <= 63
    assert long != channel("m" * 63)


@pytest.fixture
async def stores(postgres_dsn: str, namespace: str) -> AsyncIterator[list[PostgresEventStore]]:
    opened = [
        await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=2)
        for _ in range(2)
    ]
    await opened[0].migrate()
    yield opened
    await opened[0].drop_namespace()
    for store in opened:
        await store.close()


def _change(partition: int) -> Change:
    ref = Ref("counter", uuid.uuid4())
    return Change(ref, 0, "c", (NewEvent("e", b"\x01"),), partition=partition)


async def _terminate_listeners(dsn: str, listener_channel: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return len(
            await connection.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1",
                f'LISTEN "{listener_channel}"%',
            )
        )
    finally:
        await connection.close()


@pytest.mark.postgres
async def test_another_stores_commit_wakes_a_listener_of_its_partition_only(
    stores: list[PostgresEventStore],
) -> None:
    reader, writer = stores
    wakeups = reader.log_wakeups()
    assert isinstance(wakeups, LogListener)
    await asyncio.wait_for(wakeups.listening.wait(), 10)
    one, two = wakeups.generation(1), wakeups.generation(2)
    await writer.commit([_change(1)])
    assert await wakeups.wait(1, one, 10.0) is True
    assert wakeups.generation(2) == two
    assert await wakeups.wait(2, two, 0.2) is False
    await wakeups.close()
    assert not wakeups.listening.is_set()


@pytest.mark.postgres
async def test_a_lost_listening_connection_wakes_everyone_and_listens_again(
    stores: list[PostgresEventStore], postgres_dsn: str
) -> None:
    reader, writer = stores
    wakeups = reader.log_wakeups()
    assert isinstance(wakeups, LogListener)
    await asyncio.wait_for(wakeups.listening.wait(), 10)
    waiting = asyncio.create_task(wakeups.wait(5, wakeups.generation(5), 30.0))
    assert await _terminate_listeners(postgres_dsn, channel(reader.schema)) == 1
    # Wake-ups may have been missed while it was down: every reader reads again.
    assert await asyncio.wait_for(waiting, 10) is True

    async def listening_again() -> bool:
        return wakeups.listening.is_set()

    await eventually(listening_again, timeout=10)
    seen = wakeups.generation(6)
    await writer.commit([_change(6)])
    assert await wakeups.wait(6, seen, 10.0) is True
    await wakeups.close()
