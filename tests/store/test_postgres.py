"""The store contract on the machine's real PostgreSQL, plus what only PostgreSQL does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pachyderm import Ref
from pachyderm.store import Change, NewEvent, PostgresEventStore

from .contract import EventStoreContract, StoreFactory

pytestmark = pytest.mark.postgres


@pytest.fixture
async def open_store(postgres_dsn: str, namespace: str) -> AsyncIterator[StoreFactory]:
    opened: list[PostgresEventStore] = []

    async def factory() -> PostgresEventStore:
        store = await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=2)
        opened.append(store)
        await store.migrate()
        return store

    yield factory
    if opened:
        await opened[0].drop_namespace()
    for store in opened:
        await store.close()


class TestPostgresEventStore(EventStoreContract):
    pass


async def test_concurrent_migrations_on_a_fresh_namespace_all_succeed(
    postgres_dsn: str, namespace: str
) -> None:
    stores = [
        await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=1)
        for _ in range(6)
    ]
    try:
        versions = await asyncio.gather(*(store.migrate() for store in stores))
        assert len(set(versions)) == 1
        connection = await asyncpg.connect(postgres_dsn)
        try:
            applied = await connection.fetch(
                f'SELECT version FROM "{namespace}".schema_migrations ORDER BY version'
            )
        finally:
            await connection.close()
        assert [row["version"] for row in applied] == list(range(1, versions[0] + 1))
    finally:
        await stores[0].drop_namespace()
        for store in stores:
            await store.close()


async def test_namespaces_are_isolated(postgres_dsn: str, namespace: str) -> None:
    ref = Ref.from_key("counter", "shared-id")
    first = await PostgresEventStore.connect(postgres_dsn, schema=namespace)
    second = await PostgresEventStore.connect(postgres_dsn, schema=namespace + "_b")
    try:
        for store in (first, second):
            await store.migrate()
        await first.commit([Change(ref, 0, "c1", [NewEvent("a", b"")])])
        assert (await first.load(ref)).version == 1
        assert (await second.load(ref)).version == 0
    finally:
        for store in (first, second):
            await store.drop_namespace()
            await store.close()


def test_schema_names_are_checked() -> None:
    with pytest.raises(ValueError, match="schema name"):
        asyncio.run(PostgresEventStore.connect("postgresql://localhost/x", schema='x"; drop'))
