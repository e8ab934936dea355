"""The store's cached plans stay index probes while its tables grow with no ANALYZE.

The commit function plans its statements once per session (generic plans) and
asyncpg prepares every other statement; a plan made while a table is small is a
sequential scan, and when nothing analyzes the table (autovacuum off or behind)
that plan stays as the table grows. Here autovacuum is off for the namespace's
tables, the plans are made while ``entities`` holds a thousand rows (a few pages:
empty or much bigger, the planner would probe the index anyway), the tables grow
by INSERT (which invalidates no plan), and the hot statements then run: none may
scan a table.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from pachyderm import Ref
from pachyderm.store import Change, Committed, NewEvent, PostgresEventStore, TimerWrite

pytestmark = pytest.mark.postgres

GROWN = ("entities", "commands", "events", "timers")
ROWS = 20_000
PLANNED_AT = 1_000
DUE = datetime(2030, 1, 1, tzinfo=UTC)


async def _hot_path(store: PostgresEventStore, refs: list[Ref], round_: int) -> None:
    """What a worker runs for a batch: load, duplicates check, commit (with a timer;
    then one of events alone), and the firing loop's read."""
    for ref in refs:
        loaded = await store.load(ref)
        await store.recorded([(ref.id, f"c{round_}")])
        timer = TimerWrite("t", DUE + timedelta(seconds=round_), f"s{round_}", b"fire")
        change = Change(ref, loaded.version, f"c{round_}", [NewEvent("e", b"x")], timers=[timer])
        [outcome] = await store.commit([change])
        assert isinstance(outcome, Committed), outcome
        # Events alone: the one-change statement (migration 0018).
        plain = Change(ref, outcome.version, f"p{round_}", [NewEvent("e", b"x")])
        assert await store.commit([plain]) == [Committed(outcome.version + 1)]
    await store.versions([ref.id for ref in refs])
    await store.due_timers(0, DUE, 10)


async def _grow(db: asyncpg.Connection, rows: int) -> None:
    await db.execute(
        "INSERT INTO entities (entity_id, entity_type, version)"
        " SELECT gen_random_uuid(), 'counter', 1 FROM generate_series(1, $1::int)",
        rows,
    )


async def _scans(db: asyncpg.Connection, namespace: str) -> dict[str, int]:
    await db.execute("SELECT pg_stat_clear_snapshot()")
    rows = await db.fetch(
        "SELECT relname, seq_scan FROM pg_stat_user_tables WHERE schemaname = $1", namespace
    )
    return {row["relname"]: row["seq_scan"] for row in rows if row["relname"] in GROWN}


async def _flush(store: PostgresEventStore) -> None:
    """Have the store's one session report its table counters now (they are sent
    when it goes idle, at most once a second otherwise)."""
    async with store._pool.acquire() as connection:
        await connection.execute("SELECT pg_stat_force_next_flush()")


async def test_hot_statements_scan_no_table_after_it_grew_unanalyzed(
    postgres_dsn: str, namespace: str
) -> None:
    store = await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=1)
    db = await asyncpg.connect(postgres_dsn, server_settings={"search_path": namespace})
    try:
        await store.migrate()
        for table in GROWN:
            await db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        await _grow(db, PLANNED_AT)
        refs = [Ref("counter", uuid.uuid4()) for _ in range(3)]
        for round_ in range(8):  # past asyncpg's five custom plans: generic ones now
            await _hot_path(store, refs, round_)
        await _grow(db, ROWS)
        await db.execute(
            "INSERT INTO commands (entity_id, command_id, version, reply)"
            " SELECT entity_id, 'c', 1, '' FROM entities WHERE version = 1"
        )
        await db.execute(
            "INSERT INTO events (entity_id, version, name, data, command_id)"
            " SELECT entity_id, 1, 'e', '', 'c' FROM entities WHERE version = 1"
        )
        await db.execute(
            "INSERT INTO timers (entity_id, timer_key, entity_type, partition, due_at,"
            " fire_at, schedule_id, payload)"
            " SELECT entity_id, 't', 'counter', 0, $1, $1, 's', '' FROM entities"
            " WHERE version = 1",
            DUE - timedelta(days=1),
        )
        await _flush(store)
        before = await _scans(db, namespace)
        for round_ in range(8, 12):
            await _hot_path(store, refs, round_)
        await _flush(store)
        assert await _scans(db, namespace) == before
    finally:
        await db.close()
        await store.drop_namespace()
        await store.close()
