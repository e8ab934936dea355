"""Entity end of life on PostgreSQL: erasure and pruning the histories of ended entities
(the statements behind ``erase``, ``prune_ended`` and ``count_prunable_ended``).

Erasure runs in one transaction that first locks (or creates) the entity's row,
the lock every commit to it takes: a commit either finished before (its rows are
deleted) or waits and is then refused, the entity being erased (migration 0013).
The log rows are found by entity id, which no index covers (so that commits pay
nothing for erasure): erasing reads the whole log once.

Pruning deletes, a bounded batch at a time, events of ended entities at or
before their final snapshot (which stays, with the entities row): they are
never read again by the entity. Their log rows stay (two numbers each, no
data), but the log is read joined with the events, so a projection that has not
read them yet, or is rebuilt, no longer sees those events.
"""

from __future__ import annotations

import asyncpg

from .._errors import EntityTypeMismatchError
from .._reference import Ref
from ._records import Erasure

_LOCK = """
    SELECT entity_type, CASE WHEN ended = 'erased' THEN ended_version ELSE version END AS version
      FROM entities WHERE entity_id = $1 FOR UPDATE
"""
_TOMBSTONE = """
    INSERT INTO entities (entity_id, entity_type, version)
    VALUES ($1, $2, 0)
    ON CONFLICT (entity_id) DO NOTHING
"""
# The version it had goes to ended_version; -2 refuses every later change (0013).
_MARK = """
    UPDATE entities SET ended = 'erased', ended_at = coalesce(ended_at, now()),
           ended_version = coalesce(ended_version, version), version = -2, updated_at = now()
     WHERE entity_id = $1
"""
# (Erasure field, statement): each deletes the entity's rows of one table, counted.
_DELETES = (
    ("events", "events WHERE entity_id = $1"),
    ("snapshots", "snapshots WHERE entity_id = $1"),
    ("commands", "commands WHERE entity_id = $1"),
    ("timers", "timers WHERE entity_id = $1"),
    ("log_rows", "event_log WHERE entity_id = $1"),
    # Published effects only: a pending one is a delivery the entity already owed.
    ("effects", "outbox WHERE entity_id = $1 AND published_at IS NOT NULL"),
    # Poison commands (migration 0014) keep the command whole: its data goes too.
    ("quarantined", "quarantine WHERE entity_id = $1"),
    ("quarantined", "parked_commands WHERE entity_id = $1"),
    ("quarantined", "command_attempts WHERE entity_id = $1"),
)

# Events of ended entities at or before their final snapshot, a batch at a time,
# skipping rows another transaction holds. entities_ended (0013) finds the ended.
_PRUNABLE = """
    SELECT ev.entity_id, ev.version FROM entities n
      JOIN snapshots s ON s.entity_id = n.entity_id
      JOIN events ev ON ev.entity_id = n.entity_id AND ev.version <= s.version
     WHERE n.ended = 'ended'
"""
PRUNE_ENDED = f"""
    WITH doomed AS ({_PRUNABLE} ORDER BY n.ended_at, ev.entity_id, ev.version LIMIT $1
                     FOR UPDATE OF ev SKIP LOCKED),
    deleted AS (
        DELETE FROM events e USING doomed d
         WHERE e.entity_id = d.entity_id AND e.version = d.version
        RETURNING 1)
    SELECT count(*) FROM deleted
"""
COUNT_ENDED = f"SELECT count(*) FROM ({_PRUNABLE}) p"


async def erase(conn: asyncpg.Connection, ref: Ref) -> Erasure:
    """Erase ``ref`` on ``conn`` (in a transaction the caller holds)."""
    row = await conn.fetchrow(_LOCK, ref.id)
    if row is None:
        await conn.execute(_TOMBSTONE, ref.id, ref.type)
        row = await conn.fetchrow(_LOCK, ref.id)  # ours, or a creator's that just won
    assert row is not None
    if row["entity_type"] != ref.type:
        raise EntityTypeMismatchError(ref.id, row["entity_type"], ref.type)
    counts: dict[str, int] = {}
    for field, target in _DELETES:
        statement = f"WITH d AS (DELETE FROM {target} RETURNING 1) SELECT count(*) FROM d"
        counts[field] = counts.get(field, 0) + int(await conn.fetchval(statement, ref.id))
    await conn.execute(_MARK, ref.id)
    return Erasure(ref.id, ref.type, int(row["version"]), **counts)
