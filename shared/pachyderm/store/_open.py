"""Open the event store a database URL names.

Only the backend the URL names is imported: opening SQLite never loads asyncpg.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ._port import EventStore
from ._sqlite import SqliteEventStore

if TYPE_CHECKING:
    from ._postgres import PostgresEventStore
    from ._shard_map import ShardMap
    from ._sharded import ShardedEventStore


async def open_store(
    url: str,
    *,
    namespace: str = "pachyderm",
    shards: ShardMap | None = None,
    statement_timeout: float | None = None,
) -> EventStore:
    """Connect to ``postgresql://...`` (schema ``namespace``) or ``sqlite:///path``.

    ``sqlite:///:memory:`` gives a private in-memory store, for tests. With
    ``shards``, the servers of the shard map, ``url`` keeping the quarantine.
    ``statement_timeout``: see :meth:`PostgresEventStore.connect` (each server's, with ``shards``).
    """
    scheme = urlsplit(url).scheme
    if shards is not None:
        if scheme not in {"postgresql", "postgres"}:
            raise ValueError("a shard map needs a postgresql:// database URL (coordination)")
        return await _sharded().connect(
            shards, schema=namespace, coordination_url=url, statement_timeout=statement_timeout
        )
    if scheme in {"postgresql", "postgres"}:
        return await _postgres().connect(url, schema=namespace, statement_timeout=statement_timeout)
    if scheme == "sqlite":
        return await SqliteEventStore.open(
            url.removeprefix("sqlite://").removeprefix("/") or ":memory:"
        )
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use postgresql:// or sqlite:///")


def _postgres() -> type[PostgresEventStore]:
    store_class: type[PostgresEventStore] = importlib.import_module(
        "._postgres", __package__
    ).PostgresEventStore
    return store_class


def _sharded() -> type[ShardedEventStore]:
    store_class: type[ShardedEventStore] = importlib.import_module(
        "._sharded", __package__
    ).ShardedEventStore
    return store_class
