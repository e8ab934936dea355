"""Projection cursors on PostgreSQL, and the transaction of an exactly-once batch.

:meth:`PostgresCursors.apply_batch` first advances the cursor row if it is
still where the batch was read from, not paused and not being rebuilt (one
``UPDATE``, which locks the row), then runs the batch's writes, all in one
transaction: a second runner of the same cursor waits on the lock, then finds
the cursor moved and writes nothing. Moving the cursor first, not locking it
and moving it after the writes, saves a round trip per batch; the transaction
commits both or neither either way. :meth:`PostgresCursors.rebuild` locks all
of a projection's cursors the same way, so no batch commits across a rebuild.
:meth:`PostgresCursors.apply_batches` does the same for several partitions' batches
at once (one transaction, one ``UPDATE``), locking their rows in partition order as
a rebuild does, so two such transactions over the same cursors never deadlock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from ..store._postgres import check_schema_name, translated_errors
from ._cursors import Clear, Cursor

_ENSURE = """
    INSERT INTO projection_cursors (projection, partition)
    SELECT $1, p FROM generate_series(0, $2 - 1) AS p
    ON CONFLICT (projection, partition) DO NOTHING
"""
_CURSORS = """
    SELECT projection, partition, position, paused, rebuilding, updated_at
      FROM projection_cursors WHERE $1::text IS NULL OR projection = $1
     ORDER BY projection, partition
"""
_ADVANCE = """
    UPDATE projection_cursors SET position = $4, updated_at = now()
     WHERE projection = $1 AND partition = $2 AND position = $3
       AND NOT paused AND NOT rebuilding
"""
# The rows locked in partition order first (the CTE runs before any row is updated:
# the UPDATE's filter needs all of it), then each moved if still where it was read.
_ADVANCE_MANY = """
    WITH moves AS (
        SELECT * FROM unnest($2::int[], $3::bigint[], $4::bigint[])
            AS m(partition, expected, position)
    ), locked AS (
        SELECT partition FROM projection_cursors
         WHERE projection = $1 AND partition = ANY($2::int[])
         ORDER BY partition FOR UPDATE
    )
    UPDATE projection_cursors AS c SET position = m.position, updated_at = now()
      FROM moves AS m
     WHERE c.projection = $1 AND c.partition = m.partition AND c.position = m.expected
       AND NOT c.paused AND NOT c.rebuilding
       AND c.partition IN (SELECT partition FROM locked)
    RETURNING c.partition
"""
_LOCK_ALL = """
    SELECT bool_or(rebuilding) FROM (
        SELECT rebuilding FROM projection_cursors WHERE projection = $1
         ORDER BY partition FOR UPDATE) AS locked
"""
_RESET = """
    UPDATE projection_cursors SET position = 0, rebuilding = false, updated_at = now()
     WHERE projection = $1
"""


def _cursor(row: Any) -> Cursor:
    return Cursor(
        row["projection"],
        row["partition"],
        row["position"],
        row["paused"],
        row["rebuilding"],
        row["updated_at"],
    )


class PostgresCursors:
    """:class:`~pachyderm.projections.CursorStore` in a namespace's schema on PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        """Use :meth:`connect`; the cursors own ``pool`` and close it."""
        self._pool = pool

    @classmethod
    async def connect(
        cls, dsn: str, *, schema: str = "pachyderm", max_size: int = 10
    ) -> PostgresCursors:
        """A pool of its own whose sessions see ``schema`` (migrated) first."""
        check_schema_name(schema)
        async with translated_errors():
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max_size,
                server_settings={
                    "search_path": schema,
                    "application_name": "pachyderm-projections",
                },
            )
        return cls(pool)

    async def ensure(self, projection: str, partitions: int) -> None:
        await self._execute(_ENSURE, projection, partitions)

    async def cursors(self, projection: str | None = None) -> list[Cursor]:
        async with translated_errors(), self._pool.acquire() as conn:
            return [_cursor(row) for row in await conn.fetch(_CURSORS, projection)]

    async def advance(self, projection: str, partition: int, expected: int, position: int) -> bool:
        return await self._execute(_ADVANCE, projection, partition, expected, position) > 0

    async def set_paused(self, projection: str, paused: bool) -> int:
        return await self._execute(
            "UPDATE projection_cursors SET paused = $2, updated_at = now() WHERE projection = $1",
            projection,
            paused,
        )

    async def request_rebuild(self, projection: str) -> int:
        return await self._execute(
            "UPDATE projection_cursors SET rebuilding = true, updated_at = now()"
            " WHERE projection = $1",
            projection,
        )

    async def rebuild(self, projection: str, clear: Clear) -> bool:
        async with translated_errors(), self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(_LOCK_ALL, projection):
                return False
            await clear(conn)
            await conn.execute(_RESET, projection)
            return True

    async def apply_batch(
        self,
        projection: str,
        partition: int,
        expected: int,
        position: int,
        work: Callable[[Any], Awaitable[None]],
    ) -> bool:
        """See :meth:`TransactionalCursors.apply_batch`: the cursor's row moved (and
        so locked) first."""
        async with translated_errors(), self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(_ADVANCE, projection, partition, expected, position)
            if status != "UPDATE 1":
                return False  # nothing was written: the transaction commits no change
            await work(conn)
            return True

    async def apply_batches(
        self,
        projection: str,
        moves: Sequence[tuple[int, int, int]],
        work: Callable[[Any, frozenset[int]], Awaitable[None]],
    ) -> frozenset[int]:
        """See :meth:`GroupedCursors.apply_batches`: the rows moved (and so locked) first."""
        partitions, expected, positions = (list(column) for column in zip(*moves, strict=True))
        async with translated_errors(), self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_ADVANCE_MANY, projection, partitions, expected, positions)
            moved = frozenset(row["partition"] for row in rows)
            if moved:
                await work(conn, moved)
            return moved

    async def close(self) -> None:
        await self._pool.close()

    async def _execute(self, sql: str, *arguments: object) -> int:
        async with translated_errors(), self._pool.acquire() as conn:
            status: str = await conn.execute(sql, *arguments)
        # "UPDATE n" / "INSERT 0 n": the row count comes last.
        return int(status.rsplit(" ", 1)[-1])
