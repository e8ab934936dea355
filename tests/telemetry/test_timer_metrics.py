"""Timer metrics: fired, lateness (fired minus due), failures, and pending."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from examples import reservation
from pachyderm import App, Entity, HandleResult, Schedule
from pachyderm._embedded import embedded
from pachyderm.worker import TimerOptions, WorkerOptions

from ..waiting import eventually
from .conftest import Recorded


@dataclass(frozen=True)
class Arm:
    pass


@dataclass(frozen=True)
class Blow:
    pass


@dataclass(frozen=True)
class Armed:
    pass


class Bomb(Entity[dict[str, Any]]):
    """Schedules a command whose handler raises: its fire fails, and is tried again."""

    commands = (Arm, Blow)
    events = (Armed,)

    def init(self) -> dict[str, Any]:
        return {}

    def handle(self, message: Any, state: dict[str, Any]) -> HandleResult:
        if isinstance(message, Blow):
            raise RuntimeError("boom")
        return [Armed()], [Schedule(Blow(), after=timedelta(0), key="blow")]

    def update(self, event: Any, state: dict[str, Any]) -> dict[str, Any]:
        return state


APP = App([reservation.Seat, reservation.Subscription, Bomb])
OPTIONS = WorkerOptions(count_timers_every=0.05, timers=TimerOptions(poll=0.05))


async def test_fired_lateness_failures_and_pending_are_measured(recorded: Recorded) -> None:
    async with embedded(APP, options=OPTIONS) as fleet:
        await fleet.client.call(reservation.Seat.ref("x"), reservation.Hold("x", seconds=0.05))
        await fleet.client.call(reservation.Seat.ref("y"), reservation.Hold("y", seconds=3600))
        await fleet.client.call(Bomb.ref("b"), Arm())

        async def measured() -> bool:
            fired = recorded.total("pachyderm.timers.fired", entity_type="seat")
            failed = recorded.total("pachyderm.timers.failures", entity_type="bomb")
            return fired >= 1 and failed >= 1

        await eventually(measured, timeout=5)
        assert recorded.count("pachyderm.timers.lateness", entity_type="seat") == 1
        [lateness] = recorded.points("pachyderm.timers.lateness", entity_type="seat")
        assert 0 <= lateness.sum < 2  # seconds after its due time: never before
        failures = recorded.points("pachyderm.timers.failures", error="HandlerError")
        assert failures, "the failing fire is counted by its error"
        [bomb_timer] = await fleet.store.entity_timers(Bomb.ref("b").id)
        assert bomb_timer.attempts >= 1
        assert bomb_timer.fire_at > bomb_timer.due_at  # backing off, due time kept

        async def pending_counted() -> bool:
            return recorded.total("pachyderm.timers.pending") == 2  # y's hold, the bomb

        await eventually(pending_counted, timeout=3)
