"""The repartition test's app: a ``Sequence`` that expects its ``Step`` commands
numbered 1, 2, 3, ... and records any other number as ``OutOfOrder`` (a command
applied out of order, twice, or after one was lost), and an alarm timer, to see
that timers pending across the switch still fire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pachyderm import App, Entity, HandleResult, Schedule


@dataclass(frozen=True)
class Step:
    seq: int


@dataclass(frozen=True)
class Arm:
    seconds: float


@dataclass(frozen=True)
class Ring:
    pass


@dataclass(frozen=True)
class Stepped:
    seq: int


@dataclass(frozen=True)
class OutOfOrder:
    seq: int
    expected: int


@dataclass(frozen=True)
class Armed:
    pass


@dataclass(frozen=True)
class Rang:
    pass


class Sequence(Entity[dict[str, Any]]):
    commands = (Step, Arm, Ring)
    events = (Stepped, OutOfOrder, Armed, Rang)

    def init(self) -> dict[str, Any]:
        return {"last": 0}

    def handle(self, message: Any, state: dict[str, Any]) -> HandleResult:
        match message:
            case Step(seq=seq):
                expected = state["last"] + 1
                return [Stepped(seq) if seq == expected else OutOfOrder(seq, expected)]
            case Arm(seconds=seconds):
                return [Armed()], [Schedule(Ring(), after=timedelta(seconds=seconds))]
            case Ring():
                return [Rang()]
        return None

    def update(self, event: Any, state: dict[str, Any]) -> dict[str, Any]:
        if isinstance(event, Stepped):
            return {**state, "last": event.seq}
        return state


app = App([Sequence])
