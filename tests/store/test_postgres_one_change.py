"""Migration 0018's one-change statement commits what the fenced function would, or nothing.

The same one-change commits (the common one and every case the statement must leave to
the function: stale versions, another type, a recorded command id, ended and erased
entities, quarantined ones, a partition with no log head yet, schema versions) go
through a store as it is and through one whose statement is never tried; outcomes and
rows must come out the same. Then the races a single statement's one snapshot opens:
a quarantine, or the same command id, committed while it waits for the entity's lock.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from pachyderm import Ref
from pachyderm.store import (
    Change,
    CommitOutcome,
    Committed,
    Duplicate,
    Fenced,
    NewEvent,
    PostgresEventStore,
    Quarantined,
)

pytestmark = pytest.mark.postgres

TABLES = {
    "entities": "entity_id, entity_type, version, ended, ended_version, fenced",
    "events": "entity_id, version, name, data, command_id, schema_version",
    "commands": "entity_id, command_id, version, reply",
    "event_log": "partition, position, entity_id, version",
    "log_heads": "partition, position",
}


def _counter(n: int) -> Ref:
    return Ref("counter", uuid.UUID(int=n * 7919 + 1))


def _change(ref: Ref, command: str, expected: int, *names: str, **extra: Any) -> Change:
    events = [NewEvent(name, name.encode(), extra.pop("schema", 1)) for name in names]
    return Change(ref, expected, command, events, command.encode(), **extra)


@pytest.fixture
async def stores(postgres_dsn: str, namespace: str) -> AsyncIterator[list[PostgresEventStore]]:
    """Two stores on namespaces of their own: the second never tries the statement."""
    opened = [
        await PostgresEventStore.connect(postgres_dsn, schema=f"{namespace}_{n}", max_size=2)
        for n in range(2)
    ]

    async def never(change: Change) -> None:
        return None

    opened[1]._commit_one = never  # type: ignore[method-assign]
    try:
        for store in opened:
            await store.migrate()
        yield opened
    finally:
        for store in opened:
            await store.drop_namespace()
            await store.close()


async def _rows(store: PostgresEventStore) -> dict[str, list[Any]]:
    async with store._pool.acquire() as connection:
        return {
            table: [
                tuple(row)
                for row in await connection.fetch(f"SELECT {columns} FROM {table} ORDER BY 1, 2")
            ]
            for table, columns in TABLES.items()
        }


async def _script(store: PostgresEventStore) -> list[list[CommitOutcome]]:
    a, b, c, d, e = (_counter(n) for n in range(5))
    quarantined = Quarantined(d.id, "q", "counter", 0, "park", "quarantined", 3, "x", b"m")
    before_its_row = Quarantined(e.id, "q", "counter", 0, "park", "quarantined", 3, "x", b"m")
    steps: list[Any] = [
        [_change(a, "a1", 0, "x")],
        [_change(a, "a2", 1, "y", "z")],  # the common case
        [_change(a, "a3", 1, "late")],  # a stale version
        [_change(a, "a2", 3, "again")],  # a recorded command id
        [Change(Ref("other", a.id), 3, "a4", [NewEvent("o", b"o")])],  # another type
        [_change(a, "a5", 3, "moved", partition=5)],  # no log head in partition 5 yet
        [_change(a, "a6", 4, "there", partition=5)],
        [_change(a, "a7", 5, "evolved", schema=3)],
        [_change(b, "b1", 0, "x"), _change(c, "c1", 0, "x"), _change(d, "d1", 0, "x")],
        [_change(b, "b2", 1, "end", ends=True)],
        [_change(b, "b3", 2, "after")],  # an ended entity
        "erase c",
        [_change(c, "c2", 1, "after")],  # an erased entity
        quarantined,
        [_change(d, "d2", 1, "parked")],  # a parked entity
        before_its_row,
        # Its first commit racing the park landed too (the documented race): no mark.
        f"INSERT INTO entities (entity_id, entity_type, version) VALUES ('{e.id}', 'counter', 1)",
        [_change(e, "e2", 1, "parked")],
    ]
    outcomes = []
    for step in steps:
        if step == "erase c":
            await store.erase(c)
        elif isinstance(step, str):
            async with store._pool.acquire() as connection:
                await connection.execute(step)
        elif isinstance(step, Quarantined):
            await store.quarantine_store().quarantine([step])
        else:
            outcomes.append(await store.commit(step))
    return outcomes


async def test_the_statement_commits_what_the_function_would(
    stores: list[PostgresEventStore],
) -> None:
    tried, untried = stores
    outcomes = await _script(tried)
    assert outcomes == await _script(untried)
    assert outcomes[1] == [Committed(3)]
    assert outcomes[6] == [Committed(5)]
    assert outcomes[-2:] == [[Fenced()], [Fenced()]]
    assert await _rows(tried) == await _rows(untried)


async def test_the_common_change_commits_through_the_statement(
    stores: list[PostgresEventStore],
) -> None:
    store = stores[0]
    ref = _counter(9)
    await store.commit([_change(ref, "first", 0, "x")])  # creates it (the function)
    assert await store._commit_one(_change(ref, "second", 1, "y")) == 2
    assert await store._commit_one(_change(ref, "third", 1, "z")) is None  # stale
    assert [event.command_id for event in await store.history(ref.id)] == ["first", "second"]


@pytest.fixture
async def raced(
    stores: list[PostgresEventStore], postgres_dsn: str
) -> Callable[[str, str], Awaitable[list[CommitOutcome]]]:
    """Commit, through the first store, a change to an entity at version 1 while
    another transaction holds the entity's lock and runs ``sql`` (``$1``: the entity
    id), then commits: the change's outcome once it is done."""
    store = stores[0]

    async def race(name: str, sql: str) -> list[CommitOutcome]:
        ref = Ref("counter", uuid.uuid5(uuid.NAMESPACE_OID, name))
        await store.commit([_change(ref, "first", 0, "x")])
        path = {"search_path": store.schema}
        other = await asyncpg.connect(postgres_dsn, server_settings=path)
        try:
            await other.execute("BEGIN")
            await other.execute("SELECT 1 FROM entities WHERE entity_id = $1 FOR UPDATE", ref.id)
            await other.execute(sql, ref.id)
            task = asyncio.ensure_future(store.commit([_change(ref, "c", 1, "y")]))
            await asyncio.sleep(0.3)
            assert not task.done(), "the commit did not wait for the entity's lock"
            await other.execute("COMMIT")
        finally:
            await other.close()
        outcome = await task
        assert [event.command_id for event in await store.history(ref.id)] == ["first"]
        return outcome

    return race


async def test_a_quarantine_committed_while_the_statement_waits_fences_the_change(
    raced: Callable[[str, str], Awaitable[list[CommitOutcome]]],
) -> None:
    quarantine = (
        "INSERT INTO quarantine (entity_id, command_id, entity_type, partition, policy, status,"
        " attempts, reason, message) VALUES ($1, 'poison', 'counter', 0, 'park', 'quarantined',"
        " 3, 'x', '')"
    )
    assert await raced("parked", quarantine) == [Fenced()]


async def test_the_same_command_id_committed_while_the_statement_waits_is_a_duplicate(
    raced: Callable[[str, str], Awaitable[list[CommitOutcome]]],
) -> None:
    # Another owner recorded the command's reply (a rejection: no event, same version).
    record = "INSERT INTO commands (entity_id, command_id, version, reply) VALUES ($1, 'c', 1, 'r')"
    assert await raced("recorded", record) == [Duplicate(b"r", 1)]
