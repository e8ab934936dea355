"""Fixtures: a migrated store and its cursors, on SQLite (a file) and PostgreSQL (a namespace
of the test's own, dropped after)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pachyderm.projections import CursorStore, PostgresCursors, SqliteCursors
from pachyderm.store import EventStore, PostgresEventStore, SqliteEventStore


@dataclass
class Backend:
    store: EventStore
    cursors: CursorStore


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Backend]:
    path = tmp_path / "events.db"
    store = await SqliteEventStore.open(path)
    await store.migrate()
    cursors = await SqliteCursors.open(str(path))
    try:
        yield Backend(store, cursors)
    finally:
        await cursors.close()
        await store.close()


@pytest.fixture
async def postgres(postgres_dsn: str, namespace: str) -> AsyncIterator[Backend]:
    store = await PostgresEventStore.connect(postgres_dsn, schema=namespace)
    try:
        await store.migrate()
        cursors = await PostgresCursors.connect(postgres_dsn, schema=namespace)
        try:
            yield Backend(store, cursors)
        finally:
            await cursors.close()
    finally:
        await store.drop_namespace()
        await store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> Backend:
    found: Backend = request.getfixturevalue(request.param)
    return found
