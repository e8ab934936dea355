"""The entity every workload uses: a counter without effects.

``examples.counter`` mails an administrator when a counter crosses 10; the
baselines have no outbox, so the benchmark's counter leaves that out and all
three systems do the same work per command: fold one ``Increased`` event and
reply with the new state ``{"count": n}``. The messages are the example's, so
the wire format (``Increment`` / ``Increased``, ``{"amount": n}``) is too.
"""

from __future__ import annotations

from typing import Any

from examples.counter import CounterState, Increased, Increment
from pachyderm import App, Entity, HandleResult

ENTITY_TYPE = "counter"
COMMAND = "Increment"
EVENT = "Increased"


class Counter(Entity[CounterState]):
    type_name = ENTITY_TYPE
    commands = (Increment,)
    events = (Increased,)

    def init(self) -> CounterState:
        return {"count": 0}

    def handle(self, message: Any, state: CounterState) -> HandleResult:
        match message:
            case Increment(amount=n):
                return [Increased(amount=n)]
        return None

    def update(self, event: Any, state: CounterState) -> CounterState:
        match event:
            case Increased(amount=n):
                return {"count": state["count"] + n}
        return state


APP = App([Counter])
SPEC = "bench.app:APP"
