"""Timers in the SQLite store: the same rules as PostgreSQL's ``pachyderm_commit_timed``.

Every function runs on the store's thread; those called from a commit run
inside its transaction, which holds SQLite's write lock from the start, so a
fire's check and the writes after it see one database.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ._records import HELD_FOR, Change, StoredTimer
from ._sqlite_base import text_time, time_text, transaction

_COLUMNS = (
    "entity_id, entity_type, timer_key, partition, due_at, schedule_id, payload, fire_at, attempts"
)
_UPSERT = """
    INSERT INTO timers (entity_id, timer_key, entity_type, partition, due_at, fire_at,
                        schedule_id, payload, attempts, scheduled_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)
    ON CONFLICT (entity_id, timer_key) DO UPDATE
       SET entity_type = excluded.entity_type, partition = excluded.partition,
           due_at = excluded.due_at, fire_at = excluded.fire_at,
           schedule_id = excluded.schedule_id, payload = excluded.payload,
           attempts = 0, scheduled_at = excluded.scheduled_at
"""


def fire_refused(connection: sqlite3.Connection, change: Change, now: str) -> bool:
    """Whether ``change`` fires a timer that is gone, replaced, or not due by ``now``."""
    fires = change.fires
    if fires is None:
        return False
    row = connection.execute(
        "SELECT 1 FROM timers WHERE entity_id = ? AND timer_key = ? AND schedule_id = ?"
        " AND due_at = ? AND due_at <= ?",
        (change.ref.id.bytes, fires.key, fires.schedule_id, time_text(fires.due_at), now),
    ).fetchone()
    return row is None


def write_timers(connection: sqlite3.Connection, change: Change, now: str) -> None:
    """Apply a committed change's timer writes, in order."""
    entity_id = change.ref.id.bytes
    for write in change.timers:
        if write.payload is None:
            connection.execute(
                "DELETE FROM timers WHERE entity_id = ? AND timer_key = ?", (entity_id, write.key)
            )
            continue
        assert write.due_at is not None
        due = time_text(write.due_at)
        connection.execute(
            _UPSERT,
            (
                entity_id,
                write.key,
                change.ref.type,
                change.partition,
                due,
                due,
                write.schedule_id,
                write.payload,
                now,
            ),
        )


def _timer(row: Any) -> StoredTimer:
    entity_id, entity_type, key, partition, due_at, schedule_id, payload, fire_at, attempts = row
    return StoredTimer(
        uuid.UUID(bytes=entity_id),
        entity_type,
        key,
        partition,
        text_time(due_at),
        schedule_id,
        payload,
        text_time(fire_at),
        attempts,
    )


def due_timers(
    connection: sqlite3.Connection,
    partition: int,
    until: datetime,
    limit: int,
    skip: Collection[uuid.UUID] = (),
) -> list[StoredTimer]:
    skipped = [entity_id.bytes for entity_id in skip]
    marks = ",".join("?" * len(skipped))
    rows = connection.execute(
        f"SELECT {_COLUMNS} FROM timers WHERE partition = ? AND fire_at <= ?"
        f" AND entity_id NOT IN ({marks}) ORDER BY fire_at LIMIT ?",
        (partition, time_text(until), *skipped, limit),
    )
    return [_timer(row) for row in rows]


def entity_timers(connection: sqlite3.Connection, entity_id: uuid.UUID) -> list[StoredTimer]:
    rows = connection.execute(
        f"SELECT {_COLUMNS} FROM timers WHERE entity_id = ? ORDER BY due_at, timer_key",
        (entity_id.bytes,),
    )
    return [_timer(row) for row in rows]


def postpone_timers(
    connection: sqlite3.Connection, delays: Mapping[tuple[uuid.UUID, str], float]
) -> dict[tuple[uuid.UUID, str], int]:
    now, attempts = datetime.now(UTC), {}
    with transaction(connection, "BEGIN IMMEDIATE"):
        for (entity_id, key), delay in delays.items():
            row = connection.execute(
                "UPDATE timers SET attempts = attempts + 1, fire_at = ?"
                " WHERE entity_id = ? AND timer_key = ? RETURNING attempts",
                (time_text(now + timedelta(seconds=delay)), entity_id.bytes, key),
            ).fetchone()
            if row is not None:
                attempts[entity_id, key] = int(row[0])
    return attempts


def hold_timers(connection: sqlite3.Connection, keys: Sequence[tuple[uuid.UUID, str]]) -> None:
    held_until = time_text(datetime.now(UTC) + HELD_FOR)
    with transaction(connection, "BEGIN IMMEDIATE"):
        connection.executemany(
            "UPDATE timers SET fire_at = ? WHERE entity_id = ? AND timer_key = ?",
            [(held_until, entity_id.bytes, key) for entity_id, key in keys],
        )


def release_timer(connection: sqlite3.Connection, entity_id: uuid.UUID, key: str) -> bool:
    with transaction(connection, "BEGIN IMMEDIATE"):
        cursor = connection.execute(
            "UPDATE timers SET attempts = 0, fire_at = due_at"
            " WHERE entity_id = ? AND timer_key = ?",
            (entity_id.bytes, key),
        )
    return cursor.rowcount > 0


def count_timers(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT count(*) FROM timers").fetchone()[0])
