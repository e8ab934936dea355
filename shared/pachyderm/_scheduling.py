"""Timers as the store keeps them, and what firing one means: pure, no I/O.

:func:`timer_write` turns a ``Schedule`` or ``Cancel`` into the store's write;
:func:`plan_fire` decides, for a due timer and the time now, which tick fires
(by the missed-fire policy), with which deterministic command id, and where
the timer goes next. The worker's firing loop and the testing kit's clock both
go through these, so a scenario fires exactly as the fleet does.

Invariants: a fired command's id depends only on the entity, the key, the
scheduling and the tick's due time, so every repeat of a fire is the same
command to the inbox; a periodic timer's ticks stay on the grid of its first
due time; a timer never moves backwards.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from . import _codec
from ._errors import PachydermError
from ._reference import Ref, parse_entity_id
from ._timers import Cancel, FiredTimer, Schedule
from .store import NewEffect, StoredTimer, TimerFire, TimerWrite

_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class TimerSpec:
    """A stored timer's payload, decoded: what to deliver, to whom, how often."""

    command: str
    data: Any
    to: Ref | None = None
    every: timedelta | None = None
    missed: str = "once"
    limit: int = 100
    skipped: int = 0  # ticks a "skip" timer dropped since it last fired
    schema_version: int = 1  # of the command's type, when it was scheduled

    def encode(self) -> bytes:
        body = {
            "command": self.command,
            "data": self.data,
            "to": [self.to.type, str(self.to.id)] if self.to else None,
            "every_us": self.every // _MICROSECOND if self.every else None,
            "missed": self.missed,
            "limit": self.limit,
            "skipped": self.skipped,
        }
        if self.schema_version != 1:  # timers stored before versions read as 1
            body["schema_version"] = self.schema_version
        return _codec.encode(body)

    @classmethod
    def decode(cls, payload: bytes) -> TimerSpec:
        """Raises :class:`PachydermError` for a payload this code cannot read."""
        try:
            body = _codec.decode_stored(payload)
            to = body.get("to")
            every = body.get("every_us")
            return cls(
                str(body["command"]),
                body.get("data"),
                Ref(str(to[0]), parse_entity_id(str(to[1]))) if to else None,
                timedelta(microseconds=int(every)) if every else None,
                str(body.get("missed", "once")),
                int(body.get("limit", 100)),
                int(body.get("skipped", 0)),
                int(body.get("schema_version", 1)),
            )
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as error:
            raise PachydermError(f"unreadable timer payload: {error!r}") from error


def schedule_id(entity: uuid.UUID, command_id: str, index: int) -> str:
    """The id of the ``index``-th effect of a command that scheduled a timer."""
    return str(uuid.uuid5(entity, f"{command_id}/{index}"))


def timer_write(
    effect: Schedule | Cancel, spec: TimerSpec | None, *, now: datetime, scheduled_as: str
) -> TimerWrite:
    """The store's write for a ``Schedule`` (with its encoded ``spec``) or a ``Cancel``."""
    if isinstance(effect, Cancel):
        return TimerWrite(effect.key)
    assert spec is not None
    due = effect.due(now).astimezone(UTC)
    return TimerWrite(effect.key, due, scheduled_as, spec.encode())


def fired_command_id(timer: StoredTimer, due: datetime, suffix: str = "") -> str:
    """The command id of the tick of ``timer`` due at ``due``: the same on every try."""
    micros = int(due.timestamp() * 1_000_000)
    name = f"timer/{timer.key}/{timer.schedule_id}/{micros}{suffix}"
    return str(uuid.uuid5(timer.entity_id, name))


@dataclass(frozen=True, slots=True)
class Firing:
    """What a fire adds to its command's change: the timer it consumes (``check``),
    the timer's own writes (consumed, or moved on), and, for a command that goes
    to another entity, the outbox row that carries it there."""

    check: TimerFire
    writes: tuple[TimerWrite, ...]
    forward: NewEffect | None = None


@dataclass(frozen=True, slots=True)
class FirePlan:
    """What firing a due timer does: deliver ``fired`` (None: nothing, the ticks are
    dropped), as command ``command_id``; then put the timer at ``next_due``
    (None: it is done) with ``spec``."""

    command_id: str
    check: TimerFire
    fired: FiredTimer | None
    next_due: datetime | None
    spec: TimerSpec

    def writes(self, timer: StoredTimer) -> tuple[TimerWrite, ...]:
        """The timer's own write: consumed, or moved to its next tick."""
        if self.next_due is None:
            return (TimerWrite(timer.key),)
        return (TimerWrite(timer.key, self.next_due, timer.schedule_id, self.spec.encode()),)


def plan_fire(timer: StoredTimer, spec: TimerSpec, now: datetime) -> FirePlan:
    """Which tick of ``timer`` fires at ``now`` (its due time has come), by its policy."""
    check = TimerFire(timer.key, timer.schedule_id, timer.due_at)
    every = spec.every
    if every is None:
        fired = FiredTimer(timer.key, timer.due_at)
        return FirePlan(fired_command_id(timer, timer.due_at), check, fired, None, spec)
    due_ticks = max((now - timer.due_at) // every + 1, 1)
    after_all = timer.due_at + due_ticks * every
    calm = replace(spec, skipped=0)
    if due_ticks == 1 or spec.missed == "once":
        missed = due_ticks - 1 + spec.skipped
        fired = FiredTimer(timer.key, timer.due_at, missed, every)
        return FirePlan(fired_command_id(timer, timer.due_at), check, fired, after_all, calm)
    if spec.missed == "skip":
        dropped = replace(calm, skipped=spec.skipped + due_ticks)
        command_id = fired_command_id(timer, timer.due_at, "/skip")
        return FirePlan(command_id, check, None, after_all, dropped)
    # "all": each tick in turn, at most ``limit`` of them; older ones are dropped.
    dropped_ticks = max(due_ticks - spec.limit, 0)
    tick = timer.due_at + dropped_ticks * every
    fired = FiredTimer(timer.key, tick, dropped_ticks + spec.skipped, every)
    return FirePlan(fired_command_id(timer, tick), check, fired, tick + every, calm)


def describe_timer(timer: StoredTimer) -> dict[str, Any]:
    """A pending timer as plain data, for a person or a machine (inspect, the gateway)."""
    described: dict[str, Any] = {
        "key": timer.key,
        "due_at": timer.due_at.isoformat(),
        "next_try_at": timer.fire_at.isoformat(),
        "attempts": timer.attempts,
        "held": timer.held,
    }
    try:
        spec = TimerSpec.decode(timer.payload)
    except PachydermError as error:
        return described | {"error": str(error)}
    return described | {
        "command": spec.command,
        "data": spec.data,
        "to": {"type": spec.to.type, "id": str(spec.to.id)} if spec.to else None,
        "every_seconds": spec.every.total_seconds() if spec.every else None,
        "missed": spec.missed if spec.every else None,
    }
