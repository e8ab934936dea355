"""Bad timers are contained: a handler's impossible Schedule fails its own command only, and
a stored timer this code cannot fire backs off while the others fire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from examples import reservation
from pachyderm import App, Entity, HandlerError, HandleResult, Schedule
from pachyderm._embedded import EmbeddedFleet, embedded
from pachyderm._scheduling import TimerSpec
from pachyderm.store import Change, TimerWrite
from pachyderm.worker import TimerOptions, WorkerOptions

from ..waiting import eventually


@dataclass(frozen=True)
class Forever:
    pass


@dataclass(frozen=True)
class Noted:
    pass


class Eternal(Entity[dict[str, Any]]):
    """Asks for a timer past the end of the calendar."""

    commands = (Forever,)
    events = (Noted,)

    def init(self) -> dict[str, Any]:
        return {}

    def handle(self, message: Any, state: dict[str, Any]) -> HandleResult:
        return [Noted()], [Schedule(Forever(), after=timedelta.max)]

    def update(self, event: Any, state: dict[str, Any]) -> dict[str, Any]:
        return state


APP = App([reservation.Seat, Eternal])


@pytest.fixture
async def fleet() -> AsyncIterator[EmbeddedFleet]:
    options = WorkerOptions(timers=TimerOptions(poll=0.05))
    async with embedded(APP, partitions=1, options=options) as running:
        yield running


async def test_a_timer_past_the_calendar_fails_its_command_only(fleet: EmbeddedFleet) -> None:
    with pytest.raises(HandlerError, match="past 9999"):
        await fleet.client.call(Eternal.ref("e"), Forever())
    assert await fleet.store.history(Eternal.ref("e").id) == []
    await fleet.client.call(reservation.Seat.ref("ok"), reservation.Hold("ok"))


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1 not msgpack",
        b"\x93\x01\x02\x03",  # msgpack, but a list
        TimerSpec("NoSuchCommand", {}).encode(),
        TimerSpec("Lapse", {"customer": 5, "extra": 1}).encode(),
    ],
    ids=["unreadable", "not-a-map", "unknown-command", "invalid-fields"],
)
async def test_an_unfireable_timer_backs_off_and_the_others_fire(
    fleet: EmbeddedFleet, payload: bytes
) -> None:
    broken, good = reservation.Seat.ref("broken"), reservation.Seat.ref("good")
    past = datetime.now(UTC) - timedelta(seconds=1)
    write = TimerWrite("hold", past, "s1", payload)
    await fleet.store.commit([Change(broken, 0, "planted", timers=[write], partition=0)])
    await fleet.client.call(good, reservation.Hold("gus", seconds=0.05))

    async def good_lapsed() -> bool:
        return bool((await fleet.client.query(good))["status"] == "free")

    await eventually(good_lapsed, timeout=5)
    [kept] = await fleet.store.entity_timers(broken.id)
    assert kept.attempts >= 1
    assert kept.fire_at > kept.due_at  # backing off; its due time stays
