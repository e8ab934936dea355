"""The testing kit's clock: a scenario's time, and the timers pending in it.

Time moves only when a test says so; no test ever sleeps. Timers are kept as
the store keeps them (the change's timer writes, in order) and fire through
the same plan as the fleet's (:func:`~pachyderm._scheduling.plan_fire`), so a
scenario fires what production would, with the same missed-fire policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .._entity_type import EntityType
from .._reference import Ref
from .._scheduling import FirePlan, TimerSpec, plan_fire
from ..store import Change, StoredTimer

START = datetime(2030, 1, 1, tzinfo=UTC)
"""When every scenario starts, unless given another time: fixed, so tests repeat."""


@dataclass(frozen=True, slots=True)
class Pending:
    """A timer pending in a scenario: its command (typed), when it falls due, to whom."""

    key: str
    command: Any
    due: datetime
    every: timedelta | None = None
    to: Ref | None = None


@dataclass(slots=True)
class Timeline:
    """The scenario's clock and its entity's pending timers, by key."""

    now: datetime = START
    timers: dict[str, StoredTimer] = field(default_factory=dict)

    def copy(self) -> Timeline:
        return Timeline(self.now, dict(self.timers))

    def apply(self, change: Change) -> None:
        """The timer writes of a committed change, in order (the last write of a key wins)."""
        for write in change.timers:
            if write.payload is None:
                self.timers.pop(write.key, None)
                continue
            assert write.due_at is not None
            self.timers[write.key] = StoredTimer(
                change.ref.id,
                change.ref.type,
                write.key,
                0,
                write.due_at,
                write.schedule_id,
                write.payload,
                write.due_at,
            )
        if change.ends:
            self.timers.clear()  # an ended entity's timers are dropped, as the store does

    def next_due(self, until: datetime) -> StoredTimer | None:
        """The soonest timer due by ``until``, if any."""
        due = [timer for timer in self.timers.values() if timer.due_at <= until]
        return min(due, key=lambda timer: (timer.due_at, timer.key), default=None)

    def plan(self, timer: StoredTimer) -> tuple[FirePlan, TimerSpec]:
        spec = TimerSpec.decode(timer.payload)
        return plan_fire(timer, spec, self.now), spec

    def pending(self, entity_type: EntityType[Any], types: Any) -> list[Pending]:
        """The pending timers, soonest first, with their commands read back."""
        found = []
        for timer in sorted(self.timers.values(), key=lambda t: (t.due_at, t.key)):
            spec = TimerSpec.decode(timer.payload)
            target = types(spec.to.type) if spec.to else entity_type
            command = target.commands.load_one(spec.command, spec.data, spec.schema_version)
            found.append(Pending(timer.key, command, timer.due_at, spec.every, spec.to))
        return found
