"""The membership store contract, run on PostgreSQL's workers table and on the simulation's
in-memory store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pachyderm.fleet._membership import PostgresMembershipStore
from pachyderm.fleet._memory_store import MemoryMembershipStore
from pachyderm.fleet._store import MembershipStore
from pachyderm.store import PostgresEventStore
from pachyderm.testing._membership_store_contract import (
    MembershipStoreContract,
    MembershipStoreFactory,
)


@pytest.mark.postgres
class TestPostgresMembershipStore(MembershipStoreContract):
    @pytest.fixture
    async def open_membership_store(
        self, postgres_dsn: str, namespace: str
    ) -> AsyncIterator[MembershipStoreFactory]:
        events = await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=1)
        await events.migrate()
        opened: list[PostgresMembershipStore] = []

        async def open_store() -> MembershipStore:
            pool = await asyncpg.create_pool(
                postgres_dsn, min_size=1, max_size=2, server_settings={"search_path": namespace}
            )
            opened.append(PostgresMembershipStore(pool))
            return opened[-1]

        try:
            yield open_store
        finally:
            for store in opened:
                await store.close()
            await events.drop_namespace()
            await events.close()


class TestMemoryMembershipStore(MembershipStoreContract):
    @pytest.fixture
    async def open_membership_store(self) -> MembershipStoreFactory:
        shared = MemoryMembershipStore()

        async def open_store() -> MembershipStore:
            return shared

        return open_store


async def test_the_memory_store_counts_its_queries_and_rows() -> None:
    store = MemoryMembershipStore()
    await store.claim("a", uuid.uuid4(), info="", fleet="worker", lease=1.0)
    await store.claim("b", uuid.uuid4(), info="", fleet="worker", lease=1.0)
    await store.roll("worker", 1.0)
    await store.roll("projections", 1.0)
    assert store.queries == {"claim": 2, "roll": 2}
    assert store.rows == 2 + 2 + 1  # two claims, two members, one empty roll's row
    assert len(store) == 2
    with pytest.raises(ValueError, match="latency"):
        MemoryMembershipStore(latency=-1)
