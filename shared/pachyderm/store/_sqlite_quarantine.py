"""The quarantine on SQLite (migration 0014): the rules of :mod:`._quarantine`, each
call one short transaction on the store's own thread."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

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
from ._sqlite_base import now_text, text_time, transaction

T = TypeVar("T")


class _Runner(Protocol):
    """The embedded store, which runs work on its connection's thread."""

    async def _run(self, work: Callable[..., T], *args: Any) -> T: ...


_COLUMNS = """
    q.entity_id, q.command_id, q.entity_type, q.partition, q.policy, q.status, q.attempts,
    q.reason, q.message, q.quarantined_at, q.decided_at,
    (SELECT count(*) FROM parked_commands k WHERE k.entity_id = q.entity_id)
"""
_STATUS_OF: dict[Decision, str] = {"resume": "resuming", "skip": "skipping"}


# PostgreSQL's pachyderm_commit_fenced (migration 0017), the same rule: the entity is
# parked, and the command is neither the one being resumed nor one parked behind it
# while no command of the entity waits for an operator.
_FENCED = """
    SELECT EXISTS (
               SELECT 1 FROM quarantine q
                WHERE q.entity_id = :e AND q.policy = 'park'
                  AND (q.status IN ('quarantined', 'resuming', 'skipping')
                       OR (q.status = 'skipped' AND EXISTS (
                               SELECT 1 FROM parked_commands k WHERE k.entity_id = :e))))
       AND NOT EXISTS (
               SELECT 1 FROM quarantine q
                WHERE q.entity_id = :e AND q.command_id = :c AND q.status = 'resuming')
       AND NOT (
               EXISTS (
                   SELECT 1 FROM parked_commands k WHERE k.entity_id = :e AND k.command_id = :c)
               AND NOT EXISTS (
                   SELECT 1 FROM quarantine q
                    WHERE q.entity_id = :e AND q.policy = 'park' AND q.status = 'quarantined'))
"""


def fenced(connection: sqlite3.Connection, entity_id: uuid.UUID, command_id: str) -> bool:
    """A change by ``command_id`` to a parked entity may not commit (see
    :class:`~pachyderm.store.Fenced`); called inside the commit's transaction."""
    row = connection.execute(_FENCED, {"e": entity_id.bytes, "c": command_id}).fetchone()
    return bool(row[0])


def _quarantined(row: Any) -> Quarantined:
    entity_id, command_id, entity_type, partition, policy, status, attempts = row[:7]
    reason, message, quarantined_at, decided_at, parked = row[7:]
    return Quarantined(
        uuid.UUID(bytes=entity_id),
        command_id,
        entity_type,
        partition,
        policy,
        status,
        attempts,
        reason,
        bytes(message),
        text_time(quarantined_at),
        None if decided_at is None else text_time(decided_at),
        parked,
    )


def _count(connection: sqlite3.Connection, keys: list[CommandKey]) -> dict[CommandKey, int]:
    now = now_text()
    counts: dict[CommandKey, int] = {}
    with transaction(connection, "BEGIN IMMEDIATE"):
        for entity_id, command_id in keys:
            (counts[(entity_id, command_id)],) = connection.execute(
                "INSERT INTO command_attempts (entity_id, command_id, attempts, last_at)"
                " VALUES (?, ?, 1, ?) ON CONFLICT (entity_id, command_id)"
                " DO UPDATE SET attempts = attempts + 1, last_at = excluded.last_at"
                " RETURNING attempts",
                (entity_id.bytes, command_id, now),
            ).fetchone()
    return counts


def _attempts(connection: sqlite3.Connection, keys: list[CommandKey]) -> dict[CommandKey, int]:
    found: dict[CommandKey, int] = {}
    for entity_id, command_id in keys:
        row = connection.execute(
            "SELECT attempts FROM command_attempts WHERE entity_id = ? AND command_id = ?",
            (entity_id.bytes, command_id),
        ).fetchone()
        if row is not None:
            found[(entity_id, command_id)] = row[0]
    return found


def _forget(connection: sqlite3.Connection, keys: list[CommandKey]) -> None:
    with transaction(connection, "BEGIN IMMEDIATE"):
        connection.executemany(
            "DELETE FROM command_attempts WHERE entity_id = ? AND command_id = ?",
            [(entity_id.bytes, command_id) for entity_id, command_id in keys],
        )


def _quarantine(connection: sqlite3.Connection, entries: list[Quarantined]) -> None:
    now = now_text()
    with transaction(connection, "BEGIN IMMEDIATE"):
        connection.executemany(
            "INSERT INTO quarantine (entity_id, command_id, entity_type, partition, policy,"
            " status, attempts, reason, message, quarantined_at)"
            " VALUES (?, ?, ?, ?, ?, 'quarantined', ?, ?, ?, ?)"
            " ON CONFLICT (entity_id, command_id) DO UPDATE"
            " SET status = 'quarantined', attempts = excluded.attempts,"
            " reason = excluded.reason, decided_at = NULL WHERE status = 'resuming'",
            [(e.entity_id.bytes, *row_of(e)[1:], now) for e in entries],
        )


def _list(
    connection: sqlite3.Connection, partitions: list[int] | None, limit: int
) -> list[Quarantined]:
    where, arguments = "", [limit]
    if partitions is not None:
        where = f"WHERE q.partition IN ({', '.join('?' * len(partitions))})"
        arguments = [*partitions, limit]
    rows = connection.execute(
        f"SELECT {_COLUMNS} FROM quarantine q {where}"
        " ORDER BY q.quarantined_at, q.entity_id, q.command_id LIMIT ?",
        arguments,
    ).fetchall()
    return [_quarantined(row) for row in rows]


def _find(connection: sqlite3.Connection, entity_id: uuid.UUID, command_id: str) -> Any:
    return connection.execute(
        f"SELECT {_COLUMNS} FROM quarantine q WHERE q.entity_id = ? AND q.command_id = ?",
        (entity_id.bytes, command_id),
    ).fetchone()


def _decide(
    connection: sqlite3.Connection, entity_id: uuid.UUID, command_id: str, status: str
) -> Any:
    with transaction(connection, "BEGIN IMMEDIATE"):
        changed = connection.execute(
            "UPDATE quarantine SET status = ?, decided_at = ?"
            " WHERE entity_id = ? AND command_id = ? AND status = 'quarantined'",
            (status, now_text(), entity_id.bytes, command_id),
        ).rowcount
        if changed and status == "resuming":  # its attempts start over
            connection.execute(
                "DELETE FROM command_attempts WHERE entity_id = ? AND command_id = ?",
                (entity_id.bytes, command_id),
            )
        return _find(connection, entity_id, command_id) if changed else None


def _settle(connection: sqlite3.Connection, entity_id: uuid.UUID, command_id: str) -> None:
    key = (entity_id.bytes, command_id)
    with transaction(connection, "BEGIN IMMEDIATE"):
        connection.execute(
            "DELETE FROM quarantine WHERE entity_id = ? AND command_id = ? AND status = 'resuming'",
            key,
        )
        connection.execute(
            "UPDATE quarantine SET status = 'skipped' WHERE entity_id = ? AND command_id = ?"
            " AND status = 'skipping'",
            key,
        )


def _park(connection: sqlite3.Connection, commands: list[Parked]) -> None:
    now = now_text()
    with transaction(connection, "BEGIN IMMEDIATE"):
        connection.executemany(
            "INSERT INTO parked_commands (entity_id, command_id, message, parked_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (entity_id, command_id)"
            " DO UPDATE SET message = excluded.message",
            [(c.entity_id.bytes, c.command_id, c.message, now) for c in commands],
        )


def _parked(connection: sqlite3.Connection, entity_id: uuid.UUID, limit: int) -> list[Parked]:
    rows = connection.execute(
        "SELECT command_id, message, position FROM parked_commands WHERE entity_id = ?"
        " ORDER BY position LIMIT ?",
        (entity_id.bytes, limit),
    ).fetchall()
    return [Parked(entity_id, command_id, bytes(message), pos) for command_id, message, pos in rows]


def _unpark(connection: sqlite3.Connection, positions: list[int]) -> None:
    with transaction(connection, "BEGIN IMMEDIATE"):
        connection.executemany(
            "DELETE FROM parked_commands WHERE position = ?", [(p,) for p in positions]
        )


class SqliteQuarantine:
    """:class:`~pachyderm.store.QuarantineStore` on an embedded store's database."""

    def __init__(self, store: _Runner) -> None:
        self._store = store

    async def attempts(self, keys: Sequence[CommandKey]) -> dict[CommandKey, int]:
        return await self._store._run(_attempts, list(keys)) if keys else {}

    async def count_attempts(self, keys: Sequence[CommandKey]) -> dict[CommandKey, int]:
        distinct = list(dict.fromkeys(keys))
        return await self._store._run(_count, distinct) if distinct else {}

    async def forget_attempts(self, keys: Sequence[CommandKey]) -> None:
        if keys:
            await self._store._run(_forget, list(keys))

    async def quarantine(self, entries: Sequence[Quarantined]) -> None:
        distinct = list({(e.entity_id, e.command_id): e for e in entries}.values())
        if distinct:
            await self._store._run(_quarantine, distinct)

    async def quarantined(
        self, *, partitions: Sequence[int] | None = None, limit: int = 1000
    ) -> list[Quarantined]:
        wanted = None if partitions is None else list(partitions)
        return await self._store._run(_list, wanted, limit)

    async def find(self, entity_id: uuid.UUID, command_id: str) -> Quarantined | None:
        row = await self._store._run(_find, entity_id, command_id)
        return None if row is None else _quarantined(row)

    async def decide(
        self, entity_id: uuid.UUID, command_id: str, decision: Decision
    ) -> Quarantined:
        status = _STATUS_OF[check_decision(decision)]
        row = await self._store._run(_decide, entity_id, command_id, status)
        if row is None:
            raise NotQuarantinedError(
                f"no command {command_id!r} of entity {entity_id} waits for a decision"
            )
        return _quarantined(row)

    async def settle(self, entity_id: uuid.UUID, command_id: str) -> None:
        await self._store._run(_settle, entity_id, command_id)

    async def park(self, commands: Sequence[Parked]) -> None:
        if distinct := distinct_parked(commands):
            await self._store._run(_park, distinct)

    async def parked(self, entity_id: uuid.UUID, limit: int) -> list[Parked]:
        return await self._store._run(_parked, entity_id, limit)

    async def unpark(self, positions: Sequence[int]) -> None:
        if positions:
            await self._store._run(_unpark, list(positions))
