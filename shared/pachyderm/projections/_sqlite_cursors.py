"""Projection cursors in a SQLite file (at-least-once projections only).

A connection of its own, on a thread of its own: the event store's file is
shared through SQLite's locks, so a private in-memory database cannot hold
cursors. Every change is one ``BEGIN IMMEDIATE`` transaction, a
compare-and-set for a cursor's advance.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .._errors import PachydermError, StoreError
from ..store._sqlite_base import now_text, text_time, transaction
from ._cursors import Clear, Cursor

T = TypeVar("T")

_ENSURE = """
    INSERT INTO projection_cursors (projection, partition, updated_at) VALUES (?, ?, ?)
    ON CONFLICT (projection, partition) DO NOTHING
"""
_CURSORS = """
    SELECT projection, partition, position, paused, rebuilding, updated_at
      FROM projection_cursors WHERE ? IS NULL OR projection = ?
     ORDER BY projection, partition
"""
_ADVANCE = """
    UPDATE projection_cursors SET position = ?, updated_at = ?
     WHERE projection = ? AND partition = ? AND position = ? AND NOT paused AND NOT rebuilding
"""


def _cursor(row: Any) -> Cursor:
    projection, partition, position, paused, rebuilding, updated_at = row
    return Cursor(
        projection, partition, position, bool(paused), bool(rebuilding), text_time(updated_at)
    )


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 10000")
    return connection


class SqliteCursors:
    """:class:`~pachyderm.projections.CursorStore` in the (migrated) SQLite file at ``path``."""

    def __init__(self, connection: sqlite3.Connection, worker: ThreadPoolExecutor) -> None:
        """Use :meth:`open`; ``connection`` belongs to the single thread of ``worker``."""
        self._connection = connection
        self._worker = worker

    @classmethod
    async def open(cls, path: str) -> SqliteCursors:
        if path in {"", ":memory:"}:
            raise PachydermError(
                "projections need a SQLite file shared with the event store, not :memory:"
            )
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pachyderm-cursors")
        connection = await asyncio.get_running_loop().run_in_executor(worker, _connect, path)
        return cls(connection, worker)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._worker, work, self._connection
            )
        except sqlite3.Error as error:
            raise StoreError(f"SQLite error: {error}") from error

    async def ensure(self, projection: str, partitions: int) -> None:
        def work(connection: sqlite3.Connection) -> None:
            with transaction(connection, "BEGIN IMMEDIATE"):
                now = now_text()
                connection.executemany(
                    _ENSURE, [(projection, partition, now) for partition in range(partitions)]
                )

        await self._run(work)

    async def cursors(self, projection: str | None = None) -> list[Cursor]:
        def work(connection: sqlite3.Connection) -> list[Cursor]:
            return [_cursor(row) for row in connection.execute(_CURSORS, (projection, projection))]

        return await self._run(work)

    async def advance(self, projection: str, partition: int, expected: int, position: int) -> bool:
        return (
            await self._update(_ADVANCE, (position, now_text(), projection, partition, expected))
            > 0
        )

    async def set_paused(self, projection: str, paused: bool) -> int:
        sql = "UPDATE projection_cursors SET paused = ?, updated_at = ? WHERE projection = ?"
        return await self._update(sql, (int(paused), now_text(), projection))

    async def request_rebuild(self, projection: str) -> int:
        sql = "UPDATE projection_cursors SET rebuilding = 1, updated_at = ? WHERE projection = ?"
        return await self._update(sql, (now_text(), projection))

    async def rebuild(self, projection: str, clear: Clear) -> bool:
        # No transaction spans clear() here: it writes elsewhere (at least once). Clearing
        # first, then resetting, at worst clears twice; never skips a reset.
        cursors = await self.cursors(projection)
        if not any(cursor.rebuilding for cursor in cursors):
            return False
        await clear(None)
        sql = (
            "UPDATE projection_cursors SET position = 0, rebuilding = 0, updated_at = ?"
            " WHERE projection = ? AND rebuilding"
        )
        return await self._update(sql, (now_text(), projection)) > 0

    async def _update(self, sql: str, parameters: tuple[Any, ...]) -> int:
        def work(connection: sqlite3.Connection) -> int:
            with transaction(connection, "BEGIN IMMEDIATE"):
                return connection.execute(sql, parameters).rowcount

        return await self._run(work)

    async def close(self) -> None:
        def work(connection: sqlite3.Connection) -> None:
            connection.close()

        await self._run(work)
        self._worker.shutdown()
