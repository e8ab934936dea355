"""Pruning on SQLite: the same rules as :mod:`._postgres_retention`.

Each batch is one short write transaction (SQLite has one writer at a time:
a commit waits at most for one batch). Times are the schema's sortable UTC
text, so the cut-off compares as text through migration 0012's indexes.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from ._retention import Retained
from ._sqlite_base import time_text, transaction

# (table, its key's columns, its time column, which rows may go at all)
_TABLES: dict[Retained, tuple[str, str, str, str]] = {
    "commands": ("commands", "entity_id, command_id", "recorded_at", "1"),
    "effects": ("outbox", "position", "published_at", "published_at IS NOT NULL"),
    "attempts": ("command_attempts", "entity_id, command_id", "last_at", "1"),
    "quarantine": ("quarantine", "entity_id, command_id", "decided_at", "status = 'skipped'"),
}


def _cutoff(older_than: float) -> str:
    return time_text(datetime.now(UTC) - timedelta(seconds=older_than))


def prune(connection: sqlite3.Connection, retained: Retained, older_than: float, limit: int) -> int:
    """Delete at most ``limit`` rows older than ``older_than`` seconds, oldest first."""
    table, key, time, may_go = _TABLES[retained]
    with transaction(connection, "BEGIN IMMEDIATE"):
        deleted = connection.execute(
            f"DELETE FROM {table} WHERE ({key}) IN ("
            f" SELECT {key} FROM {table} WHERE {may_go} AND {time} < ?"
            f" ORDER BY {time} LIMIT ?)",
            (_cutoff(older_than), limit),
        )
        return deleted.rowcount


def count_prunable(connection: sqlite3.Connection, retained: Retained, older_than: float) -> int:
    """How many rows are older than ``older_than`` seconds."""
    table, _, time, may_go = _TABLES[retained]
    (count,) = connection.execute(
        f"SELECT count(*) FROM {table} WHERE {may_go} AND {time} < ?", (_cutoff(older_than),)
    ).fetchone()
    return int(count)
