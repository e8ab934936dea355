"""A test app whose events are easy to fold: tallies that add amounts, and take notes.

``Totals`` keeps, exactly once, the total of each tally and one row per applied
event id (the primary key refuses an event applied twice); ``Recorder`` keeps, at
least once, what it was given, in memory.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from pachyderm import (
    App,
    Entity,
    HandleResult,
    PostgresProjection,
    Projection,
    ProjectionContext,
    Ref,
)
from pachyderm.store import Change, EventStore


@dataclass(frozen=True)
class Add:
    amount: int


@dataclass(frozen=True)
class Added:
    amount: int


@dataclass(frozen=True)
class Noted:
    text: str


class Tally(Entity[int]):
    commands = (Add,)
    events = (Added, Noted)

    def init(self) -> int:
        return 0

    def handle(self, message: Any, state: int) -> HandleResult:
        return [Added(message.amount)]

    def update(self, event: Any, state: int) -> int:
        return state + event.amount if isinstance(event, Added) else state


class Recorder(Projection):
    name = "recorder"
    events = (Added,)

    def __init__(self) -> None:
        self.seen: list[tuple[uuid.UUID, int, int]] = []

    async def apply(self, event: Any, context: ProjectionContext) -> None:
        assert context.connection is None
        self.seen.append((context.entity_id, context.version, event.amount))

    async def clear(self, connection: Any) -> None:
        self.seen.clear()


class Totals(PostgresProjection):
    name = "totals"
    events = (Added,)

    def __init__(self, *, stall_at: int | None = None, delay: float = 0.0) -> None:
        # stall_at: the apply call (from 1) that never returns, so a test can cancel
        # the runner between apply and commit; delay: seconds each apply takes, so a
        # test can kill the process mid-batch.
        self.stall_at = stall_at
        self.delay = delay
        self.calls = 0
        self.stalled = asyncio.Event()

    async def apply(self, event: Any, context: ProjectionContext) -> None:
        connection: asyncpg.Connection = context.connection
        await connection.execute(
            "INSERT INTO tally_totals (entity_id, total) VALUES ($1, $2)"
            " ON CONFLICT (entity_id) DO UPDATE SET total = tally_totals.total + $2",
            context.entity_id,
            event.amount,
        )
        await connection.execute(
            "INSERT INTO tally_applied (event_id, position) VALUES ($1, $2)",
            context.event_id,
            context.position,
        )
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.calls == self.stall_at:
            self.stalled.set()
            await asyncio.Event().wait()

    async def clear(self, connection: Any) -> None:
        await connection.execute("TRUNCATE tally_totals, tally_applied")


READ_MODEL = """
    CREATE TABLE tally_totals (entity_id uuid PRIMARY KEY, total bigint NOT NULL);
    CREATE TABLE tally_applied (event_id uuid PRIMARY KEY, position bigint NOT NULL);
"""


def app(*projections: Projection) -> App:
    return App([Tally], projections=projections)


async def commit(
    store: EventStore, app: App, entity: uuid.UUID, version: int, *events: Any, of: str = "tally"
) -> None:
    """Commit ``events`` to entity ``entity`` (of type ``of``) at ``version``, in the
    partition its id picks."""
    tally = app.entity_type(of)
    change = Change(
        Ref(of, entity),
        version,
        uuid.uuid4().hex,
        [tally.encode_event(event) for event in events],
        partition=entity.int % 4,
    )
    [outcome] = await store.commit([change])
    assert type(outcome).__name__ == "Committed", outcome


RECORDER = Recorder()
# For the command line (tests.projections.tally:APP, :TOTALS_APP).
APP = app(RECORDER)
TOTALS_APP = app(Totals(delay=float(os.environ.get("TALLY_APPLY_DELAY", "0"))))
