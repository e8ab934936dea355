"""The poison benchmark's app: the RPC workload's counter, and poison commands.

``Counter`` is :mod:`bench.app`'s (the healthy calls are the RPC workload's);
a ``Poisoned`` entity takes ``Crash`` (its handler ends the worker process,
``os._exit``) and ``Hang`` (its handler loops forever, blocking the worker's
event loop until the watchdog ends the worker). Neither ever applies: each is
quarantined after ``PACHYDERM_MAX_ATTEMPTS`` deliveries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from examples.counter import Counter
from pachyderm import App, Entity, HandleResult

SPEC = "bench.poison_app:APP"


@dataclass(frozen=True)
class Crash:
    pass


@dataclass(frozen=True)
class Hang:
    pass


@dataclass(frozen=True)
class Survived:
    pass


class Poisoned(Entity[dict[str, int]]):
    """An entity that only ever gets poison commands."""

    commands = (Crash, Hang)
    events = (Survived,)

    def init(self) -> dict[str, int]:
        return {}

    def handle(self, message: Any, state: dict[str, int]) -> HandleResult:
        if isinstance(message, Crash):
            os._exit(3)
        while True:  # Hang: the event loop with it
            pass

    def update(self, event: Any, state: dict[str, int]) -> dict[str, int]:
        return state


APP = App([Counter(threshold=None), Poisoned])
