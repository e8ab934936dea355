"""Pruning on PostgreSQL: the statements behind ``prune`` and ``count_prunable``.

Each batch takes the oldest rows through the time indexes of migration 0012,
locks them with ``SKIP LOCKED`` (never waiting for a commit or another pruner)
and deletes them in the same statement: one short transaction per batch.
The cut-off is the database's own clock, the one that stamped the rows.
The quarantine's tables (migration 0014) have no time index: they hold only
unanswered redeliveries and skipped commands, rows in the hundreds where
``commands`` holds millions, so a batch scans them whole.
"""

from __future__ import annotations

from ._retention import Retained

_CUTOFF = "now() - make_interval(secs => $1)"

# (table, its key's columns, its time column, which rows may go at all)
_TABLES: dict[Retained, tuple[str, str, str, str]] = {
    "commands": ("commands", "entity_id, command_id", "recorded_at", "true"),
    "effects": ("outbox", "position", "published_at", "published_at IS NOT NULL"),
    "attempts": ("command_attempts", "entity_id, command_id", "last_at", "true"),
    "quarantine": ("quarantine", "entity_id, command_id", "decided_at", "status = 'skipped'"),
}


def prune_statement(retained: Retained) -> str:
    """Delete at most $2 rows older than $1 seconds, oldest first; returns their count."""
    table, key, time, may_go = _TABLES[retained]
    return f"""
        WITH doomed AS (
            SELECT {key} FROM {table}
             WHERE {may_go} AND {time} < {_CUTOFF}
             ORDER BY {time} LIMIT $2
               FOR UPDATE SKIP LOCKED),
        deleted AS (
            DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM doomed)
            RETURNING 1)
        SELECT count(*) FROM deleted
    """


def count_statement(retained: Retained) -> str:
    """How many rows are older than $1 seconds (what pruning would delete now)."""
    table, _, time, may_go = _TABLES[retained]
    return f"SELECT count(*) FROM {table} WHERE {may_go} AND {time} < {_CUTOFF}"
