"""The namespace's event store, as a subcommand's settings name it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .._settings import Settings
from ..store import EventStore, open_store


@asynccontextmanager
async def settings_store(settings: Settings) -> AsyncIterator[EventStore]:
    """The store of ``settings``' database, namespace and shards; closed after use."""
    store = await open_store(
        settings.database_url.get_secret_value(),
        namespace=settings.namespace,
        shards=settings.shard_map(),
    )
    try:
        yield store
    finally:
        await store.close()
