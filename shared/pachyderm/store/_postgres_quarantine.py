"""The quarantine on PostgreSQL (migration 0014): each call is one statement.

Counting attempts is one upsert for the whole batch (only redelivered commands
are counted, so a healthy fleet never runs it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from ._quarantine import (
    CommandKey,
    Decision,
    NotQuarantinedError,
    Parked,
    Quarantined,
    check_decision,
    distinct_parked,
    row_of,
)

_COUNT = """
    INSERT INTO command_attempts AS a (entity_id, command_id, attempts)
    SELECT * , 1 FROM unnest($1::uuid[], $2::text[])
    ON CONFLICT (entity_id, command_id)
    DO UPDATE SET attempts = a.attempts + 1, last_at = now()
    RETURNING entity_id, command_id, attempts
"""
_ATTEMPTS = """
    SELECT a.entity_id, a.command_id, a.attempts FROM command_attempts a
      JOIN unnest($1::uuid[], $2::text[]) AS k(e, c) ON a.entity_id = k.e AND a.command_id = k.c
"""
_FORGET = """
    DELETE FROM command_attempts
     WHERE (entity_id, command_id) IN (SELECT * FROM unnest($1::uuid[], $2::text[]))
"""
# A resumed command that fails again returns to 'quarantined'; any other row stays.
# The entities' rows are locked first, as a commit locks them: a commit that locked
# them before commits before this row appears; one after it waits, then its fence
# (migration 0017) sees the row, or its one-change statement the mark the row's
# trigger sets on the entity (0018). FOR UPDATE, not FOR SHARE: the trigger updates
# the entity's row, and two quarantines of one entity each upgrading a shared lock
# would deadlock.
_QUARANTINE = """
    WITH locked AS (
        SELECT 1 FROM entities l WHERE l.entity_id = ANY ($1::uuid[])
         ORDER BY l.entity_id FOR UPDATE
    )
    INSERT INTO quarantine AS q (entity_id, command_id, entity_type, partition, policy,
                                 status, attempts, reason, message)
    SELECT e, c, t, p, y, 'quarantined', n, r, m
      FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], $6::int[],
                  $7::text[], $8::bytea[]) AS u(e, c, t, p, y, n, r, m)
     WHERE (SELECT count(*) FROM locked) >= 0
    ON CONFLICT (entity_id, command_id) DO UPDATE
       SET status = 'quarantined', attempts = excluded.attempts, reason = excluded.reason,
           decided_at = NULL
     WHERE q.status = 'resuming'
"""
_COLUMNS = """
    q.entity_id, q.command_id, q.entity_type, q.partition, q.policy, q.status, q.attempts,
    q.reason, q.message, q.quarantined_at, q.decided_at,
    (SELECT count(*) FROM parked_commands k WHERE k.entity_id = q.entity_id) AS parked
"""
_LIST = f"""
    SELECT {_COLUMNS} FROM quarantine q
     WHERE $1::int[] IS NULL OR q.partition = ANY($1)
     ORDER BY q.quarantined_at, q.entity_id, q.command_id LIMIT $2
"""
_FIND = f"SELECT {_COLUMNS} FROM quarantine q WHERE q.entity_id = $1 AND q.command_id = $2"
_DECIDE = f"""
    WITH decided AS (
        UPDATE quarantine SET status = $3, decided_at = now()
         WHERE entity_id = $1 AND command_id = $2 AND status = 'quarantined'
        RETURNING *)
    SELECT {_COLUMNS} FROM decided q
"""
_SETTLE_RESUMED = (
    "DELETE FROM quarantine WHERE entity_id = $1 AND command_id = $2 AND status = 'resuming'"
)
_SETTLE_SKIPPED = """
    UPDATE quarantine SET status = 'skipped'
     WHERE entity_id = $1 AND command_id = $2 AND status = 'skipping'
"""
_PARK = """
    INSERT INTO parked_commands (entity_id, command_id, message)
    SELECT e, c, m FROM unnest($1::uuid[], $2::text[], $3::bytea[]) WITH ORDINALITY
                        AS u(e, c, m, o)
     ORDER BY o
    ON CONFLICT (entity_id, command_id) DO UPDATE SET message = excluded.message
"""
_PARKED = """
    SELECT entity_id, command_id, message, position FROM parked_commands
     WHERE entity_id = $1 ORDER BY position LIMIT $2
"""
_UNPARK = "DELETE FROM parked_commands WHERE position = ANY($1::bigint[])"
_STATUS_OF: dict[Decision, str] = {"resume": "resuming", "skip": "skipping"}


def _quarantined(row: Any) -> Quarantined:
    return Quarantined(
        row["entity_id"],
        row["command_id"],
        row["entity_type"],
        row["partition"],
        row["policy"],
        row["status"],
        row["attempts"],
        row["reason"],
        bytes(row["message"]),
        row["quarantined_at"],
        row["decided_at"],
        int(row["parked"]),
    )


class PostgresQuarantine:
    """:class:`~pachyderm.store.QuarantineStore` on a namespace's pool."""

    def __init__(
        self, pool: asyncpg.Pool, translated: Callable[[], AbstractAsyncContextManager[None]]
    ) -> None:
        """``translated``: presents driver failures as the store's errors."""
        self._pool = pool
        self._translated = translated

    async def attempts(self, keys: Sequence[CommandKey]) -> dict[CommandKey, int]:
        if not keys:
            return {}
        async with self._translated(), self._pool.acquire() as conn:
            rows = await conn.fetch(_ATTEMPTS, [k[0] for k in keys], [k[1] for k in keys])
        return {(row["entity_id"], row["command_id"]): row["attempts"] for row in rows}

    async def count_attempts(self, keys: Sequence[CommandKey]) -> dict[CommandKey, int]:
        distinct = list(dict.fromkeys(keys))
        if not distinct:
            return {}
        async with self._translated(), self._pool.acquire() as conn:
            rows = await conn.fetch(_COUNT, [k[0] for k in distinct], [k[1] for k in distinct])
        return {(row["entity_id"], row["command_id"]): row["attempts"] for row in rows}

    async def forget_attempts(self, keys: Sequence[CommandKey]) -> None:
        if not keys:
            return
        async with self._translated(), self._pool.acquire() as conn:
            await conn.execute(_FORGET, [k[0] for k in keys], [k[1] for k in keys])

    async def quarantine(self, entries: Sequence[Quarantined]) -> None:
        entries = list({(e.entity_id, e.command_id): e for e in entries}.values())
        if not entries:
            return
        columns = zip(*(row_of(e) for e in entries), strict=True)
        async with self._translated(), self._pool.acquire() as conn:
            await conn.execute(_QUARANTINE, *(list(column) for column in columns))

    async def quarantined(
        self, *, partitions: Sequence[int] | None = None, limit: int = 1000
    ) -> list[Quarantined]:
        wanted = None if partitions is None else list(partitions)
        async with self._translated(), self._pool.acquire() as conn:
            return [_quarantined(row) for row in await conn.fetch(_LIST, wanted, limit)]

    async def find(self, entity_id: uuid.UUID, command_id: str) -> Quarantined | None:
        async with self._translated(), self._pool.acquire() as conn:
            row = await conn.fetchrow(_FIND, entity_id, command_id)
        return None if row is None else _quarantined(row)

    async def decide(
        self, entity_id: uuid.UUID, command_id: str, decision: Decision
    ) -> Quarantined:
        status = _STATUS_OF[check_decision(decision)]
        async with self._translated(), self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_DECIDE, entity_id, command_id, status)
            if row is not None and decision == "resume":  # its attempts start over
                await conn.execute(_FORGET, [entity_id], [command_id])
        if row is None:
            raise NotQuarantinedError(
                f"no command {command_id!r} of entity {entity_id} waits for a decision"
            )
        return _quarantined(row)

    async def settle(self, entity_id: uuid.UUID, command_id: str) -> None:
        async with self._translated(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_SETTLE_RESUMED, entity_id, command_id)
            await conn.execute(_SETTLE_SKIPPED, entity_id, command_id)

    async def park(self, commands: Sequence[Parked]) -> None:
        commands = distinct_parked(commands)
        if not commands:
            return
        async with self._translated(), self._pool.acquire() as conn:
            await conn.execute(
                _PARK,
                [c.entity_id for c in commands],
                [c.command_id for c in commands],
                [c.message for c in commands],
            )

    async def parked(self, entity_id: uuid.UUID, limit: int) -> list[Parked]:
        async with self._translated(), self._pool.acquire() as conn:
            rows = await conn.fetch(_PARKED, entity_id, limit)
        return [
            Parked(row["entity_id"], row["command_id"], bytes(row["message"]), row["position"])
            for row in rows
        ]

    async def unpark(self, positions: Sequence[int]) -> None:
        if not positions:
            return
        async with self._translated(), self._pool.acquire() as conn:
            await conn.execute(_UNPARK, list(positions))
