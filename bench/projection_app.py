"""The app of the projections benchmark: the benchmark's counter and a read model of it.

``CounterTotals`` is a :class:`~pachyderm.PostgresProjection` (exactly once) that
keeps each counter's total (``bench_totals``) with one upsert per batch (the
batch's amounts summed per counter first: an upsert may not touch a row twice),
and, for the lag, one row per event in ``bench_applied``: its ``recorded_at``
and the ``clock_timestamp()`` of the statement that applied it, a moment before
the batch's transaction commits. Both are written by one statement over arrays per
batch (a data-modifying ``WITH``): the measurement costs the batch no round trip.
"""

from __future__ import annotations

import uuid
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

import asyncpg

from examples.counter import Counter, Increased
from pachyderm import App, PostgresProjection, ProjectionContext

NAME = "bench_counter_totals"
SPEC = "bench.projection_app:APP"
TABLES = """
    CREATE TABLE IF NOT EXISTS bench_totals (entity_id uuid PRIMARY KEY, total bigint NOT NULL);
    CREATE TABLE IF NOT EXISTS bench_applied (
        recorded_at timestamptz NOT NULL,
        applied_at timestamptz NOT NULL
    );
"""
# One statement (a round trip) per batch: the measurement's rows ride along with the
# read model's upsert, so measuring the lag does not add a round trip to it.
_APPLY = """
    WITH totals AS (
        INSERT INTO bench_totals AS t (entity_id, total)
        SELECT * FROM unnest($1::uuid[], $2::bigint[])
            ON CONFLICT (entity_id) DO UPDATE SET total = t.total + excluded.total
    )
    INSERT INTO bench_applied (recorded_at, applied_at)
    SELECT r, clock_timestamp() FROM unnest($3::timestamptz[]) AS r
"""


class CounterTotals(PostgresProjection):
    """Each counter's total, and when each event reached it."""

    name = NAME
    events = (Increased,)

    async def apply_many(self, batch: Sequence[tuple[Any, ProjectionContext]]) -> None:
        connection: asyncpg.Connection = batch[0][1].connection
        totals: Tally[uuid.UUID] = Tally()
        for event, context in batch:
            totals[context.entity_id] += event.amount
        await connection.execute(
            _APPLY,
            list(totals),
            list(totals.values()),
            [context.recorded_at for _, context in batch],
        )

    async def clear(self, connection: Any) -> None:
        await connection.execute("DELETE FROM bench_totals")
        await connection.execute("DELETE FROM bench_applied")


APP = App([Counter(threshold=None)], projections=[CounterTotals()])
