"""Timers: a seat hold that lapses unless confirmed, and a subscription that renews.

``Seat`` holds itself for a customer and schedules its own lapse; confirming
in time cancels the timer, and a lapse that arrives after a confirmation (or
for an older hold) changes nothing. ``Subscription`` renews every period on a
fixed grid; ticks missed while nothing ran fire once as one catch-up tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pachyderm import App, Cancel, Entity, HandleResult, Reject, Schedule, current_timer

HOLD_FOR = timedelta(minutes=15)


@dataclass(frozen=True)
class Hold:
    customer: str
    seconds: float = HOLD_FOR.total_seconds()


@dataclass(frozen=True)
class Confirm:
    customer: str


@dataclass(frozen=True)
class Lapse:
    customer: str


@dataclass(frozen=True)
class Held:
    customer: str


@dataclass(frozen=True)
class Confirmed:
    customer: str


@dataclass(frozen=True)
class Lapsed:
    customer: str


SeatState = dict[str, Any]


class Seat(Entity[SeatState]):
    """A seat: free, held for a customer until the hold lapses, or sold."""

    commands = (Hold, Confirm, Lapse)
    events = (Held, Confirmed, Lapsed)

    def init(self) -> SeatState:
        return {"status": "free", "customer": None}

    def handle(self, message: Any, state: SeatState) -> HandleResult:
        match message:
            case Hold(customer=who, seconds=seconds):
                if state["status"] != "free":
                    return Reject("not_free", state["status"])
                lapse = Schedule(Lapse(who), after=timedelta(seconds=seconds), key="hold")
                return [Held(who)], [lapse]
            case Confirm(customer=who):
                if state["status"] != "held" or state["customer"] != who:
                    return Reject("not_held", state["status"])
                return [Confirmed(who)], [Cancel("hold")]
            case Lapse(customer=who):
                # A lapse for a hold that is no longer there is a no-op, never an error.
                if state["status"] == "held" and state["customer"] == who:
                    return [Lapsed(who)]
        return None

    def update(self, event: Any, state: SeatState) -> SeatState:
        match event:
            case Held(customer=who):
                return {"status": "held", "customer": who}
            case Confirmed(customer=who):
                return {"status": "sold", "customer": who}
            case Lapsed():
                return {"status": "free", "customer": None}
        return state


@dataclass(frozen=True)
class Subscribe:
    every_seconds: float


@dataclass(frozen=True)
class Renew:
    pass


@dataclass(frozen=True)
class Unsubscribe:
    pass


@dataclass(frozen=True)
class Subscribed:
    every_seconds: float


@dataclass(frozen=True)
class Renewed:
    missed: int


@dataclass(frozen=True)
class Unsubscribed:
    pass


SubscriptionState = dict[str, Any]


class Subscription(Entity[SubscriptionState]):
    """Renews every period until unsubscribed; counts the periods it missed."""

    commands = (Subscribe, Renew, Unsubscribe)
    events = (Subscribed, Renewed, Unsubscribed)

    def init(self) -> SubscriptionState:
        return {"active": False, "renewals": 0, "missed": 0}

    def handle(self, message: Any, state: SubscriptionState) -> HandleResult:
        match message:
            case Subscribe(every_seconds=seconds):
                every = timedelta(seconds=seconds)
                return [Subscribed(seconds)], [Schedule(Renew(), every=every, key="renew")]
            case Renew() if state["active"]:
                fired = current_timer()
                return [Renewed(fired.missed if fired else 0)]
            case Unsubscribe() if state["active"]:
                return [Unsubscribed()], [Cancel("renew")]
        return None

    def update(self, event: Any, state: SubscriptionState) -> SubscriptionState:
        match event:
            case Subscribed():
                return {**state, "active": True}
            case Renewed(missed=missed):
                renewals = state["renewals"] + 1
                return {**state, "renewals": renewals, "missed": state["missed"] + missed}
            case Unsubscribed():
                return {**state, "active": False}
        return state


app = App([Seat, Subscription])
