"""The app a chaos run serves: the demo's counters and bank accounts, plus ``Reminder``,
an entity that sets timers and cancels some of them.

``Remind(tag, seconds)`` schedules the timer ``tag`` to deliver ``Ring(tag)``;
``Forget(tag)`` cancels it while it is pending (refused once it rang). A
``Ring`` records the stored due time of the timer that fired it, so the checker
can tell, from the events alone, that each timer resolved exactly once (one
``Rang`` or one ``Forgot`` per ``Reminded``) and never before it was due
(``Rang``'s commit time against its ``due``).

``Ticket(Punch)`` counts punches until ``Retire`` ends it (``End``): from then on
every command to it must be answered ``ended`` and never applied (the checker's
``applied_after_end``).

``Volatile`` takes ``Bump`` like a counter, and two poisons: ``Hang`` blocks its
worker's event loop for good (the worker's watchdog ends the process after
``PACHYDERM_HANDLER_BUDGET``) and ``Crash`` ends its worker process at once
(``os._exit``). Neither ever applies: after ``PACHYDERM_MAX_ATTEMPTS`` deliveries
each is quarantined, its entity parked until the run's operator skips it (the
checker's ``quarantine_violated``: nothing of the entity applied meanwhile, and
no healthy entity stalled). ``Defer`` applies, and schedules a ``Crash`` half a
second later: a poison timer, which takes down the worker that fires it first
and a forked child on each later try (the next owner finds it risky), and after
``PACHYDERM_MAX_ATTEMPTS`` tries is held, for good (the checker's
``quarantine_violated`` if it is not held at the end). From its first bump to its
last, a periodic timer ticks it (``Tick``, twice a second): while it is parked its
ticks wait too, so a tick applied between its quarantine and the skip is a
``quarantine_violated`` as well.

``EventCounts``, the run's projection (``pachyderm projections chaos.app:APP``,
beside the workers), keeps exactly once, per entity, how many events it has and
its last version (table ``chaos_projected``, created by the run): at the end it
must equal what the stored histories say (the checker's ``projection_mismatch``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from examples import bank, counter
from pachyderm import (
    App,
    Cancel,
    End,
    Entity,
    HandleResult,
    PostgresProjection,
    ProjectionContext,
    Reject,
    Schedule,
    current_timer,
)

PROJECTION = "chaos_event_counts"
PROJECTED_TABLE = """
    CREATE TABLE IF NOT EXISTS chaos_projected (
        entity_id uuid PRIMARY KEY,
        events bigint NOT NULL,
        last_version bigint NOT NULL
    )
"""
# Within a batch each entity's events come in version order: the last one is its latest.
_PROJECT = """
    INSERT INTO chaos_projected AS p (entity_id, events, last_version)
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[])
        ON CONFLICT (entity_id) DO UPDATE
       SET events = p.events + excluded.events, last_version = excluded.last_version
"""


@dataclass(frozen=True)
class Remind:
    tag: str
    seconds: float


@dataclass(frozen=True)
class Forget:
    tag: str


@dataclass(frozen=True)
class Ring:
    tag: str


@dataclass(frozen=True)
class Reminded:
    tag: str


@dataclass(frozen=True)
class Forgot:
    tag: str


@dataclass(frozen=True)
class Rang:
    tag: str
    due: float  # the fired timer's due time, seconds since the epoch


ReminderState = dict[str, Any]


class Reminder(Entity[ReminderState]):
    """Timers by tag: pending until they ring or are forgotten."""

    commands = (Remind, Forget, Ring)
    events = (Reminded, Forgot, Rang)

    def init(self) -> ReminderState:
        return {"pending": [], "rang": 0, "forgot": 0}

    def handle(self, message: Any, state: ReminderState) -> HandleResult:
        match message:
            case Remind(tag=tag, seconds=seconds):
                if tag in state["pending"]:
                    return Reject("pending", tag)
                ring = Schedule(Ring(tag), after=timedelta(seconds=seconds), key=tag)
                return [Reminded(tag)], [ring]
            case Forget(tag=tag):
                if tag not in state["pending"]:
                    return Reject("not_pending", tag)
                return [Forgot(tag)], [Cancel(tag)]
            case Ring(tag=tag):
                fired = current_timer()
                if fired is None:
                    return Reject("not_a_timer", "Ring is sent by timers only")
                # A ring for a timer no longer pending would be a fire after its cancel:
                # recorded all the same, so that the checker sees it.
                return [Rang(tag, fired.due.timestamp())]
        return None

    def update(self, event: Any, state: ReminderState) -> ReminderState:
        pending = state["pending"]
        match event:
            case Reminded(tag=tag):
                return {**state, "pending": [*pending, tag]}
            case Forgot(tag=tag):
                left = [t for t in pending if t != tag]
                return {**state, "pending": left, "forgot": state["forgot"] + 1}
            case Rang(tag=tag):
                left = [t for t in pending if t != tag]
                return {**state, "pending": left, "rang": state["rang"] + 1}
        return state


@dataclass(frozen=True)
class Punch:
    pass


@dataclass(frozen=True)
class Retire:
    pass


@dataclass(frozen=True)
class Punched:
    pass


@dataclass(frozen=True)
class Retired:
    pass


class Ticket(Entity[dict[str, int]]):
    """Punched a few times, then retired for good: it ends."""

    commands = (Punch, Retire)
    events = (Punched, Retired)

    def init(self) -> dict[str, int]:
        return {"punches": 0, "retired": 0}

    def handle(self, message: Any, state: dict[str, int]) -> HandleResult:
        if isinstance(message, Retire):
            return End([Retired()])
        return [Punched()]

    def update(self, event: Any, state: dict[str, int]) -> dict[str, int]:
        if isinstance(event, Retired):
            return {**state, "retired": 1}
        return {**state, "punches": state["punches"] + 1}


@dataclass(frozen=True)
class Bump:
    pass


@dataclass(frozen=True)
class Hang:
    """A poison: its handler never returns, and blocks its worker's event loop."""


@dataclass(frozen=True)
class Crash:
    """A poison: its handler ends its worker process."""


@dataclass(frozen=True)
class Defer:
    """Applies, and schedules a :class:`Crash` at its own entity: a poison timer."""


@dataclass(frozen=True)
class Tick:
    """Sent by a volatile entity's periodic timer only (see :class:`Volatile`)."""


@dataclass(frozen=True)
class Bumped:
    pass


@dataclass(frozen=True)
class Ticked:
    pass


@dataclass(frozen=True)
class Deferred:
    pass


POISONS = ("Hang", "Crash")  # poison commands, as sent
TIMER_POISON = "Defer"  # the command that sets a poison timer (key POISON_TIMER)
POISON_TIMER = "poison"
CRASH_EXIT = 3  # the status a Crash ends its worker with
BUMPS = 5  # a volatile entity's bumps: 2 before its poison, 3 after
TICKS = "ticks"  # the key of a volatile entity's periodic timer
TICK_EVERY = timedelta(seconds=0.5)
MAX_TICKS = 30  # a tick timer ends by itself after these (a run may end mid-cycle)


class Volatile(Entity[dict[str, int]]):
    """Bumped a few times, poisoned once (see the module's note), bumped again; ticked
    by a periodic timer from its first bump to its last, so that ticks fall due while
    it is parked (none may apply before the skip: the checker's quarantine_violated)."""

    commands = (Bump, Hang, Crash, Defer, Tick)
    events = (Bumped, Deferred, Ticked)

    def init(self) -> dict[str, int]:
        return {"bumps": 0, "ticks": 0}

    def handle(self, message: Any, state: dict[str, int]) -> HandleResult:
        if isinstance(message, Crash):
            os._exit(CRASH_EXIT)
        if isinstance(message, Hang):
            while True:  # the event loop, heartbeats included, with it
                pass
        if isinstance(message, Defer):
            return [Deferred()], [Schedule(Crash(), after=timedelta(seconds=0.5), key=POISON_TIMER)]
        if isinstance(message, Tick):
            return [Ticked()], [Cancel(TICKS)] if state["ticks"] + 1 >= MAX_TICKS else []
        if state["bumps"] == 0:
            return [Bumped()], [Schedule(Tick(), every=TICK_EVERY, key=TICKS)]
        return [Bumped()], [Cancel(TICKS)] if state["bumps"] + 1 >= BUMPS else []

    def update(self, event: Any, state: dict[str, int]) -> dict[str, int]:
        return {
            "bumps": state["bumps"] + isinstance(event, Bumped),
            "ticks": state["ticks"] + isinstance(event, Ticked),
        }


ENTITIES = (counter.Counter, bank.Account, Reminder, Ticket, Volatile)


class EventCounts(PostgresProjection):
    """Per entity: its events so far and its last version, one upsert per batch."""

    name = PROJECTION
    events = tuple(event for entity in ENTITIES for event in entity.events)

    async def apply_many(self, batch: Sequence[tuple[Any, ProjectionContext]]) -> None:
        connection: asyncpg.Connection = batch[0][1].connection
        counts: dict[uuid.UUID, list[int]] = {}
        for _, context in batch:
            seen = counts.setdefault(context.entity_id, [0, 0])
            seen[0] += 1
            seen[1] = context.version
        ids = list(counts)
        await connection.execute(
            _PROJECT, ids, [counts[i][0] for i in ids], [counts[i][1] for i in ids]
        )

    async def clear(self, connection: Any) -> None:
        await connection.execute("DELETE FROM chaos_projected")


APP = App(
    list(ENTITIES),
    effect_handlers=[counter.AdminMailer()],
    projections=[EventCounts()],
)
