"""The event log in the SQLite store: the same rules as PostgreSQL's (migration 0008).

:func:`log_events` runs inside a commit's transaction, which holds SQLite's
write lock from its start: positions are given out in commit order, and a
rolled-back commit gives its positions back.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from ._records import Change, LoggedEvent, RecordedEvent
from ._sqlite_base import text_time

_LOG = """
    SELECT l.partition, l.position, n.entity_type, e.entity_id, e.version, e.name, e.data,
           e.command_id, e.recorded_at, e.schema_version
      FROM event_log l
      JOIN events e ON e.entity_id = l.entity_id AND e.version = l.version
      JOIN entities n ON n.entity_id = l.entity_id
     WHERE l.partition = ? AND l.position > ?
     ORDER BY l.position LIMIT ?
"""
_ADVANCE = """
    INSERT INTO log_heads (partition, position) VALUES (?, ?)
    ON CONFLICT (partition) DO UPDATE SET position = excluded.position
"""


def log_events(connection: sqlite3.Connection, change: Change) -> None:
    """Append a committed change's events to its partition's log."""
    if not change.events:
        return
    count = len(change.events)
    row = connection.execute(
        "SELECT position FROM log_heads WHERE partition = ?", (change.partition,)
    ).fetchone()
    head = (row[0] if row else 0) + count
    connection.execute(_ADVANCE, (change.partition, head))
    connection.executemany(
        "INSERT INTO event_log (partition, position, entity_id, version) VALUES (?, ?, ?, ?)",
        [
            (change.partition, head - count + offset, change.ref.id.bytes, version)
            for offset, version in enumerate(
                range(change.expected_version + 1, change.new_version + 1), start=1
            )
        ],
    )


def _logged(row: Any) -> LoggedEvent:
    partition, position, entity_type, entity_id, version, name, data, command_id, at, schema = row
    event = RecordedEvent(
        uuid.UUID(bytes=entity_id), version, name, data, command_id, text_time(at), schema
    )
    return LoggedEvent(partition, position, entity_type, event)


def read_log(
    connection: sqlite3.Connection, partition: int, after: int, limit: int
) -> list[LoggedEvent]:
    return [_logged(row) for row in connection.execute(_LOG, (partition, after, limit))]


def log_heads(connection: sqlite3.Connection) -> dict[int, int]:
    return dict(connection.execute("SELECT partition, position FROM log_heads").fetchall())
