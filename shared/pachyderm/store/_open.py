"""Open the event store a database URL names."""

from __future__ import annotations

from urllib.parse import urlsplit

from ._port import EventStore
from ._postgres import PostgresEventStore
from ._sqlite import SqliteEventStore


async def open_store(url: str, *, namespace: str = "pachyderm") -> EventStore:
    """Connect to ``postgresql://...`` (schema ``namespace``) or ``sqlite:///path``.

    ``sqlite:///:memory:`` gives a private in-memory store, for tests.
    """
    scheme = urlsplit(url).scheme
    if scheme in {"postgresql", "postgres"}:
        return await PostgresEventStore.connect(url, schema=namespace)
    if scheme == "sqlite":
        return await SqliteEventStore.open(
            url.removeprefix("sqlite://").removeprefix("/") or ":memory:"
        )
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use postgresql:// or sqlite:///")
