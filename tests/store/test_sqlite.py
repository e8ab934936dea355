"""The store contract on SQLite files, plus what only the embedded store does."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from pachyderm import MigrationError, Ref, StoreError, StoreUnavailableError
from pachyderm.store import Change, Committed, NewEvent, SqliteEventStore, open_store
from pachyderm.testing import EventStoreContract, StoreFactory
from pachyderm.testing._store_contract import counter, events


@pytest.fixture
async def open_store_on_file(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """New, migrated stores (each its own connection and thread) on one file."""
    opened: list[SqliteEventStore] = []

    async def factory() -> SqliteEventStore:
        store = await SqliteEventStore.open(str(tmp_path / "events.db"))
        opened.append(store)
        await store.migrate()
        return store

    yield factory
    for store in opened:
        await store.close()


class TestSqliteEventStore(EventStoreContract):
    @pytest.fixture
    def open_store(self, open_store_on_file: StoreFactory) -> StoreFactory:
        return open_store_on_file


def applied_migrations(path: Path) -> list[int]:
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT version FROM schema_migrations ORDER BY version")
        return [version for (version,) in rows]


async def test_an_in_memory_store_opens_from_a_url() -> None:
    store = await open_store("sqlite:///:memory:")
    try:
        assert await store.migrate() >= 1
        ref = counter()
        assert await store.commit([Change(ref, 0, "c1", events("a", "b"))]) == [Committed(2)]
        assert [e.name for e in (await store.load(ref)).events] == ["a", "b"]
    finally:
        await store.close()


async def test_concurrent_migrations_of_a_fresh_file_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    stores = await asyncio.gather(*(SqliteEventStore.open(str(path)) for _ in range(6)))
    try:
        versions = await asyncio.gather(*(store.migrate() for store in stores))
        assert len(set(versions)) == 1
        assert applied_migrations(path) == list(range(1, versions[0] + 1))
    finally:
        for store in stores:
            await store.close()


async def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    store = await SqliteEventStore.open(str(path))
    try:
        version = await store.migrate()
        with closing(sqlite3.connect(path)) as connection, connection:
            connection.execute(
                "INSERT INTO schema_migrations VALUES (?, 'future', '')", (version + 1,)
            )
        with pytest.raises(MigrationError, match="newer"):
            await store.migrate()
    finally:
        await store.close()


async def test_data_survives_closing_and_reopening_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "durable.db")
    ref = counter()
    store = await SqliteEventStore.open(path)
    await store.migrate()
    await store.commit([Change(ref, 0, "c1", events("a"), b"reply")])
    await store.close()
    await store.close()  # closing twice is harmless

    reopened = await SqliteEventStore.open(path)
    try:
        await reopened.migrate()
        assert [e.name for e in (await reopened.load(ref)).events] == ["a"]
        assert await reopened.commit([Change(ref, 1, "c2", events("b"))]) == [Committed(2)]
    finally:
        await reopened.close()


async def test_stores_on_one_file_serialise_their_commits(
    open_store_on_file: StoreFactory,
) -> None:
    # Two stores, two threads: every round both try to append the same version.
    first, second = await open_store_on_file(), await open_store_on_file()
    ref = counter("shared")
    outcomes = []
    for round_ in range(20):
        version = (await first.load(ref)).version
        outcomes += await asyncio.gather(
            *(
                store.commit([Change(ref, version, f"s{n}-{round_}", [NewEvent("e", b"")])])
                for n, store in enumerate((first, second))
            )
        )
    committed = [outcome for [outcome] in outcomes if isinstance(outcome, Committed)]
    assert len(committed) == 20  # exactly one winner per round
    assert [e.version for e in await second.history(ref.id)] == list(range(1, 21))


async def test_a_writer_waits_for_the_lock_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = await SqliteEventStore.open(str(path), busy_timeout=5.0)
    try:
        await store.migrate()
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            waiting = asyncio.create_task(store.commit([Change(counter(), 0, "c1", events("a"))]))
            await asyncio.sleep(0.2)  # runs on time: the loop is free while the commit waits
            assert not waiting.done()
            other.execute("ROLLBACK")
            assert await waiting == [Committed(1)]
    finally:
        await store.close()


async def test_a_lock_held_too_long_makes_the_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    store = await SqliteEventStore.open(str(path), busy_timeout=0.05)
    try:
        await store.migrate()
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailableError, match="locked"):
                await store.commit([Change(counter(), 0, "c1", events("a"))])
            other.execute("ROLLBACK")
        assert (await store.load(counter())).version == 0
    finally:
        await store.close()


async def test_a_closed_store_refuses_work() -> None:
    store = await SqliteEventStore.open(":memory:")
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.load(Ref.from_key("counter", "a"))
