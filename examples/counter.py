"""The original's Counter: counts, and tells an admin when it crosses 10."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pachyderm import App, Effect, EffectHandler, Entity, HandleResult

log = logging.getLogger(__name__)

THRESHOLD = 10

CounterState = dict[str, int]


@dataclass(frozen=True)
class Increment:
    amount: int = 1


@dataclass(frozen=True)
class Increased:
    amount: int


class AdminMailer(EffectHandler):
    """Tells an administrator that a counter crossed a threshold."""

    name = "admin_mailer"

    @classmethod
    def notify(cls, threshold: int) -> Effect:
        return cls.effect({"threshold": threshold})

    def dispatch(self, payload: Any, config: Mapping[str, Any]) -> None:
        log.warning("counter crossed %s (mail to %s)", payload["threshold"], config.get("to"))


class Counter(Entity[CounterState]):
    """Counts; tells an admin when a count crosses ``threshold`` (``None``: never).

    An app may register a configured instance, as the benchmark does with
    ``App([Counter(threshold=None)])``: the same counter, without effects.
    """

    commands = (Increment,)
    events = (Increased,)

    def __init__(self, threshold: int | None = THRESHOLD) -> None:
        self.threshold = threshold

    def init(self) -> CounterState:
        return {"count": 0}

    def handle(self, message: Any, state: CounterState) -> HandleResult:
        match message:
            case Increment(amount=n):
                events = [Increased(amount=n)]
                limit = self.threshold
                if limit is not None and state["count"] < limit <= state["count"] + n:
                    return events, [AdminMailer.notify(threshold=limit)]
                return events
        return None

    def update(self, event: Any, state: CounterState) -> CounterState:
        match event:
            case Increased(amount=n):
                return {**state, "count": state["count"] + n}
        return state


app = App([Counter], effect_handlers=[AdminMailer()])
