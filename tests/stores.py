"""Stores a test opens on a fresh namespace: each migrated when opened, the namespace
dropped and every store closed afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar


class Droppable(Protocol):
    async def migrate(self) -> int: ...

    async def drop_namespace(self) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=Droppable)


@asynccontextmanager
async def migrated_stores(
    connect: Callable[[], Awaitable[S]],
) -> AsyncIterator[Callable[[], Awaitable[S]]]:
    """A factory of stores from ``connect``, each migrated; all removed on exit."""
    opened: list[S] = []

    async def factory() -> S:
        store = await connect()
        opened.append(store)
        await store.migrate()
        return store

    yield factory
    if opened:
        await opened[0].drop_namespace()
    for store in opened:
        await store.close()
