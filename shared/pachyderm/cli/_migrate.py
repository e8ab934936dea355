"""``pachyderm migrate``."""

from __future__ import annotations

from .._settings import Settings
from ..store import open_store


async def migrate(settings: Settings) -> None:
    store = await open_store(settings.database_url.get_secret_value(), namespace=settings.namespace)
    try:
        version = await store.migrate()
    finally:
        await store.close()
    print(f"schema of namespace {settings.namespace!r} is at version {version}")
