"""Entity end of life on SQLite: the same rules as PostgreSQL's (migration 0013,
:mod:`._postgres_erasure`).

The commit helpers run inside a commit's transaction, which holds SQLite's
write lock from its start, so what they read is what the commit writes on:
an entity ended or erased before is refused, a change that writes nothing but
its reply to an entity without a row records only its command id and reply.
Erasure and pruning are each one short write transaction.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence

from .._errors import EntityTypeMismatchError
from .._reference import Ref
from ._records import ENDED, ERASED, ERASED_VERSION, Change, Committed, Ended, Erasure
from ._sqlite_base import transaction

_DELETES = (
    ("events", "events WHERE entity_id = ?"),
    ("snapshots", "snapshots WHERE entity_id = ?"),
    ("commands", "commands WHERE entity_id = ?"),
    ("timers", "timers WHERE entity_id = ?"),
    ("log_rows", "event_log WHERE entity_id = ?"),
    ("effects", "outbox WHERE entity_id = ? AND published_at IS NOT NULL"),
    # Poison commands (migration 0014) keep the command whole: its data goes too.
    ("quarantined", "quarantine WHERE entity_id = ?"),
    ("quarantined", "parked_commands WHERE entity_id = ?"),
    ("quarantined", "command_attempts WHERE entity_id = ?"),
)
_PRUNABLE = """
    SELECT ev.entity_id, ev.version FROM entities n
      JOIN snapshots s ON s.entity_id = n.entity_id
      JOIN events ev ON ev.entity_id = n.entity_id AND ev.version <= s.version
     WHERE n.ended = 'ended'
"""


def _writes_more_than_a_reply(change: Change) -> bool:
    return bool(
        change.expected_version
        or change.events
        or change.effects
        or change.timers
        or change.fires
        or change.ends
    )


def row_less(connection: sqlite3.Connection, changes: Sequence[Change]) -> set[uuid.UUID]:
    """The entities of ``changes`` that get no row: none stored, and every change of the
    batch to them writes nothing but its reply."""
    touching = {change.ref.id for change in changes if _writes_more_than_a_reply(change)}
    candidates = {change.ref.id for change in changes} - touching
    return {
        entity_id
        for entity_id in candidates
        if connection.execute(
            "SELECT 1 FROM entities WHERE entity_id = ?", (entity_id.bytes,)
        ).fetchone()
        is None
    }


def record_reply(connection: sqlite3.Connection, change: Change, now: str) -> Committed:
    """Commit a row-less change: its command id and reply, at version 0, and nothing else."""
    connection.execute(
        "INSERT INTO commands (entity_id, command_id, version, reply, recorded_at)"
        " VALUES (?, ?, 0, ?, ?)",
        (change.ref.id.bytes, change.command_id, change.reply, now),
    )
    return Committed(0)


def ended(how: str | None, version: int) -> Ended | None:
    """The outcome of a change to an entity whose row says ``how`` it ended, if it did."""
    if how is None:
        return None
    return Ended(ERASED_VERSION, ERASED) if how == ERASED else Ended(version, ENDED)


def end(connection: sqlite3.Connection, change: Change, now: str) -> None:
    """Mark a committed ending change's entity ended and drop its pending timers."""
    entity_id = change.ref.id.bytes
    connection.execute(
        "UPDATE entities SET ended = 'ended', ended_at = ?, ended_version = ? WHERE entity_id = ?",
        (now, change.new_version, entity_id),
    )
    connection.execute("DELETE FROM timers WHERE entity_id = ?", (entity_id,))


def erase(connection: sqlite3.Connection, ref: Ref, now: str) -> Erasure:
    with transaction(connection, "BEGIN IMMEDIATE"):
        row = connection.execute(
            "SELECT entity_type, version FROM entities WHERE entity_id = ?", (ref.id.bytes,)
        ).fetchone()
        if row is None:
            connection.execute(
                "INSERT INTO entities (entity_id, entity_type, version, updated_at)"
                " VALUES (?, ?, 0, ?)",
                (ref.id.bytes, ref.type, now),
            )
            row = (ref.type, 0)
        if row[0] != ref.type:
            raise EntityTypeMismatchError(ref.id, row[0], ref.type)
        counts: dict[str, int] = {}
        for field, target in _DELETES:
            deleted = connection.execute(f"DELETE FROM {target}", (ref.id.bytes,)).rowcount
            counts[field] = counts.get(field, 0) + deleted
        connection.execute(
            "UPDATE entities SET ended = 'erased', ended_at = coalesce(ended_at, ?),"
            " ended_version = coalesce(ended_version, version), updated_at = ?"
            " WHERE entity_id = ?",
            (now, now, ref.id.bytes),
        )
    return Erasure(ref.id, ref.type, int(row[1]), **counts)


def prune_ended(connection: sqlite3.Connection, limit: int) -> int:
    with transaction(connection, "BEGIN IMMEDIATE"):
        return connection.execute(
            "DELETE FROM events WHERE (entity_id, version) IN ("
            f"{_PRUNABLE} ORDER BY n.ended_at, ev.entity_id, ev.version LIMIT ?)",
            (limit,),
        ).rowcount


def count_prunable_ended(connection: sqlite3.Connection) -> int:
    (count,) = connection.execute(f"SELECT count(*) FROM ({_PRUNABLE})").fetchone()
    return int(count)
