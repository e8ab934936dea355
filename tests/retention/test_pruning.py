"""The pruner: bounded batches, oldest first, paced, never waiting for a held row.

Rows are back-dated with SQL, as if written days ago, on SQLite and on the
machine's PostgreSQL.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from pachyderm.store import PostgresEventStore, Retained, SqliteEventStore
from pachyderm.worker import PruneOptions, Pruner, WorkerHooks

OLD_COMMANDS, OLD_EFFECTS = 1000, 250
OLD_ATTEMPTS, OLD_SKIPPED = 2, 1  # the quarantine's leftovers (see backdate_sqlite)
HOUR = 3600.0


class Pruned(WorkerHooks):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def pruned(self, retained: str, rows: int) -> None:
        self.seen.append((retained, rows))


class CountingSqlite(SqliteEventStore):
    """A real SQLite store that remembers what each prune asked for and got."""

    calls: list[tuple[Retained, int, int]]

    async def prune(self, retained: Retained, older_than: float, limit: int) -> int:
        deleted = await super().prune(retained, older_than, limit)
        self.calls.append((retained, limit, deleted))
        return deleted


def backdate_sqlite(path: Path, commands: int, effects: int) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.executemany(
            "INSERT INTO commands VALUES (?, ?, 1, x'00', ?)",
            [
                (
                    uuid.uuid4().bytes,
                    f"old-{n}",
                    f"2020-01-01T00:{n // 60 % 60:02}:{n % 60:02}+00:00",
                )
                for n in range(commands)
            ],
        )
        connection.executemany(
            "INSERT INTO outbox (effect_id, entity_id, command_id, destination, payload,"
            " created_at, published_at) VALUES (?, ?, 'c', 'effect.x', x'00', ?, ?)",
            [
                (uuid.uuid4().bytes, uuid.uuid4().bytes, "2020-01-01T00:00:00+00:00", published)
                for published in ["2020-01-01T00:00:01+00:00"] * effects + [None]
            ],
        )
        connection.executemany(
            "INSERT INTO command_attempts VALUES (?, 'c', 2, '2020-01-01T00:00:00+00:00')",
            [(uuid.uuid4().bytes,) for _ in range(OLD_ATTEMPTS)],
        )
        # Skipped long ago (goes), and quarantined as long ago but still waiting (stays).
        connection.executemany(
            "INSERT INTO quarantine VALUES (?, 'c', 'counter', 0, 'park', ?, 3, 'hung', x'00',"
            " '2020-01-01T00:00:00+00:00', '2020-01-01T00:00:00+00:00')",
            [(uuid.uuid4().bytes, "skipped"), (uuid.uuid4().bytes, "quarantined")],
        )
    connection.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[CountingSqlite]:
    store = await CountingSqlite.open(tmp_path / "pruned.db")
    store.calls = []
    await store.migrate()
    await asyncio.to_thread(backdate_sqlite, tmp_path / "pruned.db", OLD_COMMANDS, OLD_EFFECTS)
    yield store
    await store.close()


async def test_a_run_deletes_everything_past_its_window_in_bounded_batches(
    sqlite_store: CountingSqlite,
) -> None:
    hooks = Pruned()
    options = PruneOptions(commands=HOUR, effects=HOUR, batch=300, pause=0.0)
    pruner = Pruner(sqlite_store, options, hooks=hooks)
    everything = {
        "commands": OLD_COMMANDS,
        "effects": OLD_EFFECTS,
        "attempts": OLD_ATTEMPTS,
        "quarantine": OLD_SKIPPED,
    }
    assert await pruner.prunable() == everything
    assert await pruner.run() == everything
    # Every batch asked for at most 300 rows; the run stopped at the first short one.
    assert sqlite_store.calls == [
        ("commands", 300, 300),
        ("commands", 300, 300),
        ("commands", 300, 300),
        ("commands", 300, 100),
        ("effects", 300, 250),
        ("attempts", 300, OLD_ATTEMPTS),
        ("quarantine", 300, OLD_SKIPPED),
    ]
    assert hooks.seen == [(what, n) for what, _, n in sqlite_store.calls]
    assert await pruner.prunable() == dict.fromkeys(everything, 0)
    # The effect never published stays.
    assert [e.destination for e in await sqlite_store.pending_effects()] == ["effect.x"]


async def test_a_run_pauses_between_batches(sqlite_store: CountingSqlite) -> None:
    options = PruneOptions(commands=HOUR, effects=HOUR, batch=250, pause=0.1)
    started = time.monotonic()
    await Pruner(sqlite_store, options).run()
    # Every full batch is followed by a pause and another batch, until one comes back
    # short: 4 of commands, 1 of effects, then the quarantine's few.
    assert [n for _, _, n in sqlite_store.calls] == [250, 250, 250, 250, 0, 250, 0, 2, 1]
    assert time.monotonic() - started >= 0.5


async def test_a_worker_not_owning_partition_zero_never_prunes(
    sqlite_store: CountingSqlite,
) -> None:
    options = PruneOptions(commands=HOUR, effects=HOUR, interval=0.01)
    running = asyncio.create_task(Pruner(sqlite_store, options).run_forever(lambda: False))
    await asyncio.sleep(0.2)
    running.cancel()
    assert sqlite_store.calls == []
    owner = asyncio.create_task(Pruner(sqlite_store, options).run_forever(lambda: True))
    try:
        for _ in range(200):
            if sqlite_store.calls and await sqlite_store.count_prunable("commands", HOUR) == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        owner.cancel()
    assert await sqlite_store.count_prunable("commands", HOUR) == 0


# -- PostgreSQL -----------------------------------------------------------------------


@pytest.fixture
async def postgres(postgres_dsn: str, namespace: str) -> AsyncIterator[PostgresEventStore]:
    store = await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=4)
    await store.migrate()
    connection = await asyncpg.connect(postgres_dsn, server_settings={"search_path": namespace})
    try:
        await connection.execute(
            "INSERT INTO commands (entity_id, command_id, version, reply, recorded_at)"
            " SELECT gen_random_uuid(), 'old-' || n, 1, '\\x00'::bytea,"
            " now() - interval '2 days' + make_interval(secs => n) FROM generate_series(1, $1) n",
            OLD_COMMANDS,
        )
    finally:
        await connection.close()
    yield store
    await store.drop_namespace()
    await store.close()


@pytest.mark.postgres
async def test_postgres_batches_are_bounded_and_oldest_first(
    postgres: PostgresEventStore, postgres_dsn: str, namespace: str
) -> None:
    assert await postgres.prune("commands", HOUR, 100) == 100
    connection = await asyncpg.connect(postgres_dsn, server_settings={"search_path": namespace})
    try:
        left = await connection.fetch("SELECT command_id FROM commands")
    finally:
        await connection.close()
    # old-1 .. old-100 were the oldest.
    assert {row["command_id"] for row in left} == {f"old-{n}" for n in range(101, 1001)}


@pytest.mark.postgres
async def test_postgres_pruning_skips_rows_another_transaction_holds_instead_of_waiting(
    postgres: PostgresEventStore, postgres_dsn: str, namespace: str
) -> None:
    holder = await asyncpg.connect(postgres_dsn, server_settings={"search_path": namespace})
    try:
        async with holder.transaction():
            # A pruner in another process (or a commit's lookup) holds the 10 oldest.
            await holder.execute("SELECT 1 FROM commands ORDER BY recorded_at LIMIT 10 FOR UPDATE")
            started = time.monotonic()
            deleted = await asyncio.wait_for(postgres.prune("commands", HOUR, 2000), 5)
            assert time.monotonic() - started < 2
            assert deleted == OLD_COMMANDS - 10
        # Released: the next run takes them.
        assert await postgres.prune("commands", HOUR, 2000) == 10
    finally:
        await holder.close()
