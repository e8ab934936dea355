"""The worker's tests run on a real event store: SQLite in memory, migrated, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pachyderm.store import EventStore, open_store


@pytest.fixture
async def store() -> AsyncIterator[EventStore]:
    store = await open_store("sqlite:///:memory:")
    await store.migrate()
    yield store
    await store.close()
