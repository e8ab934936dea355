"""Timers in the PostgreSQL store: the timer arguments of ``pachyderm_commit_batch``,
and the queries of the firing loop, inspection and back-off (see migration 0007)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._records import Change, StoredTimer

_COLUMNS = (
    "entity_id, entity_type, timer_key, partition, due_at, schedule_id, payload, fire_at, attempts"
)
DUE = (
    f"SELECT {_COLUMNS} FROM timers WHERE partition = $1 AND fire_at <= $2"
    " AND entity_id <> ALL ($4::uuid[]) ORDER BY fire_at LIMIT $3"
)
OF_ENTITY = f"SELECT {_COLUMNS} FROM timers WHERE entity_id = $1 ORDER BY due_at, timer_key"
POSTPONE = """
    UPDATE timers SET attempts = attempts + 1, fire_at = now() + make_interval(secs => d.delay)
      FROM unnest($1::uuid[], $2::text[], $3::float8[]) AS d(entity_id, timer_key, delay)
     WHERE timers.entity_id = d.entity_id AND timers.timer_key = d.timer_key
    RETURNING timers.entity_id, timers.timer_key, timers.attempts
"""
HOLD = """
    UPDATE timers SET fire_at = now() + $3::interval
      FROM unnest($1::uuid[], $2::text[]) AS d(entity_id, timer_key)
     WHERE timers.entity_id = d.entity_id AND timers.timer_key = d.timer_key
"""
RELEASE = """
    UPDATE timers SET attempts = 0, fire_at = due_at
     WHERE entity_id = $1 AND timer_key = $2 RETURNING 1
"""
# Exact while small; above 100,000 rows the planner's estimate (kept by autovacuum),
# which costs nothing, where a count would scan the table every time it is asked.
COUNT = """
    SELECT CASE WHEN estimate < 100000 THEN (SELECT count(*) FROM timers) ELSE estimate END
      FROM (SELECT greatest(reltuples, 0)::bigint AS estimate FROM pg_class
             WHERE oid = 'timers'::regclass) s
"""


def timer_arguments(changes: Sequence[Change]) -> list[list[Any]]:
    """The fires (r_*) and writes (w_*) of ``changes``, addressed by position from 1."""
    fires: list[list[Any]] = [[], [], [], []]
    writes: list[list[Any]] = [[], [], [], [], [], []]
    for position, change in enumerate(changes, start=1):
        if change.fires is not None:
            for column, value in zip(
                fires,
                (position, change.fires.key, change.fires.schedule_id, change.fires.due_at),
                strict=True,
            ):
                column.append(value)
        for write in change.timers:
            values = (
                position,
                write.key,
                change.partition,
                write.due_at,
                write.schedule_id,
                write.payload,
            )
            for column, value in zip(writes, values, strict=True):
                column.append(value)
    return [*fires, *writes]


def stored_timer(row: Any) -> StoredTimer:
    return StoredTimer(
        row["entity_id"],
        row["entity_type"],
        row["timer_key"],
        row["partition"],
        row["due_at"],
        row["schedule_id"],
        row["payload"],
        row["fire_at"],
        row["attempts"],
    )
