"""The app a chaos run serves: the demo's counters and bank accounts, plus ``Reminder``,
an entity that sets timers and cancels some of them.

``Remind(tag, seconds)`` schedules the timer ``tag`` to deliver ``Ring(tag)``;
``Forget(tag)`` cancels it while it is pending (refused once it rang). A
``Ring`` records the stored due time of the timer that fired it, so the checker
can tell, from the events alone, that each timer resolved exactly once (one
``Rang`` or one ``Forgot`` per ``Reminded``) and never before it was due
(``Rang``'s commit time against its ``due``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from examples import bank, counter
from pachyderm import App, Cancel, Entity, HandleResult, Reject, Schedule, current_timer


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


APP = App([counter.Counter, bank.Account, Reminder], effect_handlers=[counter.AdminMailer()])
