"""A stalled worker gives its lease up from its watchdog's thread (the real PostgreSQL):
the others see it gone at once, not once its lease lapses."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import pytest

from pachyderm.fleet import PostgresMembership
from pachyderm.fleet._port import Abandons
from pachyderm.store import PostgresEventStore

pytestmark = pytest.mark.postgres

LEASE = 60.0  # seconds: far longer than the test, so only abandon() can end it


@pytest.fixture
async def schema(postgres_dsn: str, namespace: str) -> AsyncIterator[str]:
    store = await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=1)
    try:
        await store.migrate()
        yield namespace
    finally:
        await store.drop_namespace()
        await store.close()


async def member(dsn: str, schema: str, name: str) -> PostgresMembership:
    membership = await PostgresMembership.connect(
        dsn, worker_id=name, schema=schema, dead_after=LEASE, join_delay=0
    )
    await membership.join()
    return membership


async def test_a_blocked_worker_gives_its_lease_up_from_another_thread(
    postgres_dsn: str, schema: str
) -> None:
    stalled = await member(postgres_dsn, schema, "stalled")
    other = await member(postgres_dsn, schema, "other")
    try:
        assert isinstance(stalled, Abandons)
        assert await other.live_workers() == ["other", "stalled"]
        thread = threading.Thread(target=stalled.abandon)
        thread.start()
        thread.join()  # the event loop blocked meanwhile, as a hung handler blocks it
        assert await other.live_workers() == ["other"]
        stalled.abandon()  # again: nothing left to give up, no error
        assert await other.live_workers() == ["other"]
    finally:
        for membership in (stalled, other):
            await membership.close()
