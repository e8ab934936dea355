"""Migration 0016's pachyderm_commit_batch behaves as the layered functions it replaces.

The same random batches (duplicates, stale versions, row-less rejections, ended and
erased entities, timer writes, cancels and fires of present and gone timers, effects
with trace context, snapshots, ends) go through ``pachyderm_commit_ending`` (0013/0015,
over 0011's three functions: what the previous release calls) in one namespace and
through ``pachyderm_commit_batch`` in another. Every change's outcome, version and
reply, and every table's rows but their timestamps, must come out the same.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pachyderm import Ref
from pachyderm.store import (
    Change,
    NewEffect,
    NewEvent,
    PostgresEventStore,
    Snapshot,
    TimerFire,
    TimerWrite,
)
from pachyderm.store._postgres import commit_arguments

pytestmark = pytest.mark.postgres

FUNCTIONS = ("pachyderm_commit_ending", "pachyderm_commit_batch")
ENTITIES = [Ref("counter", uuid.UUID(int=n * 7919 + 1)) for n in range(6)]
DUE = datetime(2026, 1, 1, tzinfo=UTC)
TABLES = {
    "entities": "entity_id, entity_type, version, ended, ended_version",
    "events": "entity_id, version, name, data, command_id, schema_version",
    "commands": "entity_id, command_id, version, reply",
    "outbox": "effect_id, entity_id, command_id, destination, payload, trace_context",
    "snapshots": "entity_id, version, state, fingerprint",
    "timers": "entity_id, timer_key, entity_type, partition, due_at, fire_at, schedule_id,"
    " payload, attempts",
    "event_log": "partition, position, entity_id, version",
    "log_heads": "partition, position",
}


def _sql(function: str) -> str:
    return (
        f"SELECT outcome, version, reply FROM {function}("
        + ", ".join(f"${n}" for n in range(1, 29))
        + ")"
    )


@pytest.fixture
async def connections(postgres_dsn: str, namespace: str) -> AsyncIterator[list[asyncpg.Connection]]:
    stores = [
        await PostgresEventStore.connect(postgres_dsn, schema=f"{namespace}_{n}", max_size=1)
        for n in range(len(FUNCTIONS))
    ]
    opened: list[asyncpg.Connection] = []
    try:
        for n, store in enumerate(stores):
            await store.migrate()
            path = {"search_path": f"{namespace}_{n}"}
            opened.append(await asyncpg.connect(postgres_dsn, server_settings=path))
        yield opened
    finally:
        for connection in opened:
            await connection.close()
        for store in stores:
            await store.drop_namespace()
            await store.close()


def _timers(rng: random.Random, stored: list[Any]) -> tuple[list[TimerWrite], TimerFire | None]:
    writes = []
    if rng.random() < 0.3:
        key = rng.choice(["k0", "k1"])
        if rng.random() < 0.7:
            due = DUE + timedelta(seconds=rng.randrange(3))
            writes.append(TimerWrite(key, due, rng.choice(["s0", "s1"]), b"fire"))
        else:
            writes.append(TimerWrite(key))  # a cancel
    fire = None
    if rng.random() < 0.3:
        if stored and rng.random() < 0.7:
            timer = rng.choice(stored)
            fire = TimerFire(timer["timer_key"], timer["schedule_id"], timer["due_at"])
        else:
            fire = TimerFire("k0", "s9", DUE)  # gone: never written
    return writes, fire


async def _batch(rng: random.Random, connection: asyncpg.Connection) -> list[Change]:
    versions = dict(await connection.fetch("SELECT entity_id, version FROM entities"))
    # Mostly the same few entities; some never seen (row-less: rejections record only).
    fresh = [Ref("counter", uuid.UUID(int=rng.getrandbits(128))) for _ in range(2)]
    pool = ENTITIES + fresh * 2
    refs = sorted(rng.choices(pool, k=rng.randrange(1, 7)), key=lambda ref: ref.id)
    changes = []
    for ref in refs:
        version = max(0, versions.get(ref.id, 0))  # an erased entity is at -2
        expected = version if rng.random() < 0.85 else max(0, version + rng.choice([-1, 1]))
        stored = await connection.fetch("SELECT * FROM timers WHERE entity_id = $1", ref.id)
        timers, fire = _timers(rng, list(stored))
        ends = rng.random() < 0.04
        count = max(int(ends), rng.choice([0, 0, 1, 1, 2]))
        events = [NewEvent(f"e{n}", bytes([n]), rng.choice([1, 2])) for n in range(count)]
        change = Change(
            ref,
            expected,
            f"c{rng.randrange(40)}",
            events,
            reply=rng.randbytes(3),
            effects=[NewEffect(uuid.UUID(int=rng.getrandbits(128)), "d", b"p")]
            if rng.random() < 0.2
            else (),
            snapshot=Snapshot(expected + count, b"s", rng.choice([None, "f"]))
            if rng.random() < 0.2 and expected + count > 0
            else None,
            trace={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
            if rng.random() < 0.5
            else None,
            timers=timers,
            fires=fire,
            partition=ref.id.int % 3,
            ends=ends,
        )
        changes.append(change)
        versions[ref.id] = expected + count
    return changes


async def _rows(connection: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [
            tuple(row)
            for row in await connection.fetch(f"SELECT {columns} FROM {table} ORDER BY {columns}")
        ]
        for table, columns in TABLES.items()
    }


async def test_the_one_function_commits_as_the_layered_functions_did(
    connections: list[asyncpg.Connection],
) -> None:
    rng = random.Random(16)
    outcomes: set[str] = set()
    for batch in range(300):
        changes = await _batch(rng, connections[0])
        if batch % 60 == 59:  # an operator erases an entity: the tombstone 0013 writes
            erased = rng.choice(ENTITIES).id
            for connection in connections:
                await connection.execute(
                    "UPDATE entities SET ended = 'erased', version = -2 WHERE entity_id = $1",
                    erased,
                )
        results = []
        for function, connection in zip(FUNCTIONS, connections, strict=True):
            rows = await connection.fetch(_sql(function), *commit_arguments(changes))
            results.append([tuple(row) for row in rows])
        assert results[0] == results[1], f"batch {batch}: {changes}"
        outcomes.update(row[0] for row in results[0])
    assert outcomes == {"c", "d", "x", "g", "n", "e"}  # every kind of outcome was met
    assert await _rows(connections[0]) == await _rows(connections[1])
