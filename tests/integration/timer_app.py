"""The timer integration tests' app: the reservation ``Seat`` and an ``Alarm`` that
records, in the event a fired command makes, the timer's stored due time and
how many ticks it missed, so a test can compare it with the event's commit time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from examples.reservation import Seat
from pachyderm import App, Entity, HandleResult, Reject, Schedule, current_timer


@dataclass(frozen=True)
class Arm:
    """Ring ``tag`` after ``seconds``, under timer ``key`` (replacing what it held)."""

    tag: str
    seconds: float
    key: str = "alarm"


@dataclass(frozen=True)
class Ring:
    tag: str


@dataclass(frozen=True)
class Armed:
    tag: str
    key: str


@dataclass(frozen=True)
class Rang:
    tag: str
    key: str
    due: float  # the fired timer's due time, seconds since the epoch
    missed: int


class Alarm(Entity[dict[str, Any]]):
    commands = (Arm, Ring)
    events = (Armed, Rang)

    def init(self) -> dict[str, Any]:
        return {"armed": [], "rang": []}

    def handle(self, message: Any, state: dict[str, Any]) -> HandleResult:
        match message:
            case Arm(tag=tag, seconds=seconds, key=key):
                ring = Schedule(Ring(tag), after=timedelta(seconds=seconds), key=key)
                return [Armed(tag, key)], [ring]
            case Ring(tag=tag):
                fired = current_timer()
                if fired is None:
                    return Reject("not_a_timer", "Ring is only sent by a timer")
                return [Rang(tag, fired.key, fired.due.timestamp(), fired.missed)]
        return None

    def update(self, event: Any, state: dict[str, Any]) -> dict[str, Any]:
        match event:
            case Armed(tag=tag):
                return {**state, "armed": [*state["armed"], tag]}
            case Rang(tag=tag):
                return {**state, "rang": [*state["rang"], tag]}
        return state


app = App([Seat, Alarm])
