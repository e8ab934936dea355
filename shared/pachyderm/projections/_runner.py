"""One projection over one partition's log: read after the cursor, apply, advance.

Invariants: events reach ``apply`` in log order (so each entity's in version
order), only those of the classes the projection declares; the cursor moves
only from the position the batch was read after (a compare-and-set), so a
second runner of the same cursor writes nothing. Exactly once
(:class:`~pachyderm.PostgresProjection`): the batch's ``apply`` calls and the
cursor's advance are one transaction; a runner stopped anywhere in between
(cancelled, killed) leaves neither. At least once: the cursor advances after the
batch is applied; a runner stopped in between applies it again. Given a
:class:`~pachyderm.projections._group.BatchGroup` (a projection process gives its
runners one per exactly-once projection), a runner's batch that is not full (live,
a few events) commits in one transaction with the other partitions' batches ready
at the same time, under the same compare-and-set; a runner cancelled once that
transaction has started leaves both, if it commits, or neither.

Idle, a runner waits for a wake-up of its partition's log (LISTEN/NOTIFY on
PostgreSQL) or, as the fallback, polls with an interval doubling from
``min_interval`` to ``max_interval``, back to the minimum as soon as events come.

Exactly once, a runner keeps where its cursor is (where it moved it, or
read it) and reads the log from there without asking the cursor store again
(a round trip less per batch, on the live lag's path): the batch's
transaction checks the cursor anyway, so a cursor moved, paused or marked for
a rebuild meanwhile makes the batch write nothing, and the next step reads the
cursor afresh. A runner idle long enough for its polling interval to reach
``max_interval`` reads it afresh at every poll, so it sees a rebuild asked while
nothing comes (a live runner's next batch is refused and sees it then).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from .._app import App
from .._errors import PachydermError
from .._projection import AnyEvent, Projection, ProjectionContext
from ..store import EventStore, LoggedEvent, LogWakeups, NoWakeups
from ._cursors import Cursor, CursorStore, TransactionalCursors
from ._group import BatchGroup

log = logging.getLogger("pachyderm.projections")


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    """How much a batch reads, and how often an idle runner looks for new events."""

    batch_size: int = 500
    min_interval: float = 0.02
    max_interval: float = 1.0


def _handled(app: App, projection: Projection) -> frozenset[tuple[str, str]] | None:
    """The ``(entity type, stored name)`` pairs ``projection`` handles: decode only those
    (names an upcaster or alias may turn into a declared one included); None: every
    logged event (a projection of events as stored, declaring them all)."""
    if not projection.decodes and issubclass(AnyEvent, projection.events):
        return None
    return frozenset(
        (entity_type.name, stored)
        for entity_type in app
        for stored in entity_type.events.evolution.stored_names(
            name for name, cls in entity_type.events.types() if issubclass(cls, projection.events)
        )
    )


async def apply_events(
    app: App, projection: Projection, chosen: list[LoggedEvent], connection: Any
) -> None:
    """``projection.apply_many`` of ``chosen`` (decoded, unless it takes events as
    stored), with ``connection`` (None: at least once) in each context."""
    if not chosen:
        return
    if not projection.decodes:
        await projection.apply_many(
            [(logged.event, _context(logged, connection)) for logged in chosen]
        )
        return
    decode = app.entity_type
    await projection.apply_many(
        [
            (event, _context(logged, connection))
            for logged in chosen
            for event in decode(logged.entity_type).decode_events(
                logged.event.name, logged.event.data, logged.event.schema_version
            )
            if projection.handles(event)  # an upcaster may split into others
        ]
    )


def _context(logged: LoggedEvent, connection: Any) -> ProjectionContext:
    event = logged.event
    return ProjectionContext(
        entity_type=logged.entity_type,
        entity_id=event.entity_id,
        version=event.version,
        event_id=logged.event_id,
        partition=logged.partition,
        position=logged.position,
        recorded_at=event.recorded_at,
        connection=connection,
        name=event.name,
        data=event.data,
        schema_version=event.schema_version,
    )


class ProjectionRunner:
    """Keeps ``projection`` up to date with the log of ``partition``."""

    def __init__(
        self,
        app: App,
        store: EventStore,
        cursors: CursorStore,
        projection: Projection,
        partition: int,
        *,
        options: RunnerOptions | None = None,
        group: BatchGroup | None = None,
    ) -> None:
        self._transactional = cursors if isinstance(cursors, TransactionalCursors) else None
        if projection.exactly_once and self._transactional is None:
            raise PachydermError(
                f"projection {projection.name!r} is a PostgresProjection (exactly once): it"
                " runs on PostgreSQL only, not on this database"
            )
        self.app = app
        self.store = store
        self.cursors = cursors
        self.projection = projection
        self.partition = partition
        self.options = options or RunnerOptions()
        self._handled = _handled(app, projection)
        self._group = group if projection.exactly_once else None
        # Exactly once: where the cursor is, as this runner last moved or read it
        # (None: read it).
        self._kept: int | None = None

    async def step(self) -> int:
        """Apply one batch; how many log positions it moved the cursor on (0: nothing to
        do, paused, rebuilt, or another runner moved the cursor first).

        Exactly once, it reads the cursor only when it keeps none (at the first step,
        after a batch that wrote nothing, when idle a while in :meth:`run`): a pause or
        a rebuild asked meanwhile is seen by the batch's transaction, or then."""
        name = self.projection.name
        kept, self._kept = self._kept, None
        if kept is None:
            cursor = await self._cursor()
            if cursor.rebuilding:
                if await self.cursors.rebuild(name, self.projection.clear):
                    log.info("projection %s: cleared and reset for a rebuild", name)
                return 0
            if cursor.paused:
                return 0
            start = cursor.position
        else:
            start = kept
        logged = await self.store.read_log(self.partition, start, self.options.batch_size)
        if not logged:
            if self.projection.exactly_once:
                self._kept = start
            return 0
        head = logged[-1].position
        handled = self._handled
        chosen = [i for i in logged if handled is None or (i.entity_type, i.event.name) in handled]
        if self.projection.exactly_once and self._transactional is not None:
            full = len(logged) >= self.options.batch_size
            moved = await self._exactly_once(start, head, chosen, grouped=not full)
            if moved:
                self._kept = head
        else:
            await apply_events(self.app, self.projection, chosen, None)
            moved = await self.cursors.advance(name, self.partition, start, head)
        if not moved:
            if kept is None:
                log.info("projection %s: cursor %d moved meanwhile", name, self.partition)
            return 0
        return head - start

    async def _cursor(self) -> Cursor:
        name = self.projection.name
        found = [c for c in await self.cursors.cursors(name) if c.partition == self.partition]
        if not found:
            raise PachydermError(
                f"projection {name!r} has no cursor for partition {self.partition}"
                " (CursorStore.ensure creates them; the projection process does at start)"
            )
        [cursor] = found
        return cursor

    async def _exactly_once(
        self, start: int, head: int, chosen: list[LoggedEvent], *, grouped: bool
    ) -> bool:
        # A full batch (catching up) is big enough to commit alone: the runners' own
        # transactions then run side by side, as many as the pool has connections.
        if grouped and self._group is not None:
            return await self._group.commit(self.partition, start, head, chosen)
        assert self._transactional is not None

        async def work(connection: Any) -> None:
            await apply_events(self.app, self.projection, chosen, connection)

        name = self.projection.name
        return await self._transactional.apply_batch(name, self.partition, start, head, work)

    async def run(self, wakeups: LogWakeups | None = None) -> None:
        """Step until cancelled; a failing step is logged and tried again after a pause.

        Between batches it waits for ``wakeups`` of its partition's log, or for the
        polling interval, whichever comes first."""
        options = self.options
        wakeups = wakeups or NoWakeups()
        interval = options.min_interval
        while True:
            # Taken before reading: a commit landing while the batch runs wakes the wait.
            seen = wakeups.generation(self.partition)
            try:
                moved = await self.step()
            except Exception:
                log.exception(
                    "projection %s, partition %d: a batch failed; retrying",
                    self.projection.name,
                    self.partition,
                )
                interval = options.max_interval
                await asyncio.sleep(interval)
                continue
            if moved >= options.batch_size:
                continue  # more is waiting: no pause
            if moved:
                interval = options.min_interval
            woken = await wakeups.wait(self.partition, seen, interval)
            if not moved and not woken:
                interval = min(interval * 2, options.max_interval)
                if interval >= options.max_interval:
                    self._kept = None  # idle a while: read the cursor (a rebuild?) again
