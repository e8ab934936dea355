"""The one-change commit: the common batch in one plain statement (migration 0018).

A worker serving one call at a time commits batches of one change, and most such
changes add events to an entity that exists and do nothing else. For those, one
data-modifying statement moves the entity's version on, writes the events, the
command id with its reply, the log's head and positions, and answers with the new
version: no PL/pgSQL body around the writes, eight parameters instead of 28.

Invariant: the statement commits exactly what ``pachyderm_commit_fenced`` would
commit for the change, or nothing. Its WHERE holds every condition under which the
function would commit it: the entity at the expected version and of the change's
type, neither ended nor erased, its command id not recorded, no quarantine row of
the entity in the statement's snapshot and no quarantine mark on its row (the row's
newest version, which READ COMMITTED re-checks after waiting for its lock), and the
partition's log head present. When it commits nothing (no row back), or the command
id was recorded meanwhile (the key refuses it: an error, nothing written), the
caller commits the change through the function, which decides and answers it.
"""

from __future__ import annotations

from typing import Any

from ._records import Change

_EVENTS = "cardinality($6::text[])"
ONE_CHANGE = f"""
WITH moved AS (
    UPDATE entities e SET version = e.version + {_EVENTS}, updated_at = now()
     WHERE e.entity_id = $1::uuid AND e.entity_type = $2::text AND e.version = $3::bigint
       AND e.ended IS NULL AND NOT e.fenced
       AND NOT EXISTS (SELECT 1 FROM commands r
                        WHERE r.entity_id = $1::uuid AND r.command_id = $4::text)
       AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.entity_id = $1::uuid)
       AND EXISTS (SELECT 1 FROM log_heads h WHERE h.partition = $8::int)
    RETURNING e.version
), head AS (
    UPDATE log_heads h SET position = h.position + {_EVENTS}
      FROM moved WHERE h.partition = $8::int
    RETURNING h.position
), written AS (
    INSERT INTO events (entity_id, version, name, data, command_id, schema_version)
    SELECT $1::uuid, $3::bigint + k, ($6::text[])[k], ($7::bytea[])[k], $4::text,
           coalesce(($9::int[])[k], 1)
      FROM moved, generate_series(1, {_EVENTS}) AS k
), logged AS (
    INSERT INTO event_log (partition, position, entity_id, version)
    SELECT $8::int, head.position - {_EVENTS} + k, $1::uuid, $3::bigint + k
      FROM head, generate_series(1, {_EVENTS}) AS k
), recorded AS (
    INSERT INTO commands (entity_id, command_id, version, reply)
    SELECT $1::uuid, $4::text, moved.version, $5::bytea FROM moved
)
SELECT version FROM moved
"""


def eligible(changes: list[Change]) -> bool:
    """Whether ``changes`` is one change the statement can commit: events added to an
    entity that has some, nothing else (no effects, snapshot, timers, fire or end)."""
    if len(changes) != 1:
        return False
    change = changes[0]
    return (
        change.expected_version > 0
        and bool(change.events)
        and not change.effects
        and change.snapshot is None
        and not change.timers
        and change.fires is None
        and not change.ends
    )


def arguments(change: Change) -> list[Any]:
    """The statement's parameters for ``change``."""
    versions = [event.schema_version for event in change.events]
    return [
        change.ref.id,
        change.ref.type,
        change.expected_version,
        change.command_id,
        change.reply,
        [event.name for event in change.events],
        [event.data for event in change.events],
        change.partition,
        versions if any(version != 1 for version in versions) else None,
    ]
