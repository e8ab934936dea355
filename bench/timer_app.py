"""The app of the timers benchmark: the benchmark's counter, and an alarm that rings once.

``Arm(due)`` records ``Armed`` and schedules ``Ring`` at ``due`` (seconds since
the epoch) under the key ``alarm``; the fired ``Ring`` records ``Rang`` with the
due time the timer fired for (from ``current_timer()``), so the lateness of each
fire can be read back from the store: the event's ``recorded_at`` (the start of
the transaction that committed the fire) minus that due time. The counter is
served beside it so that the RPC workload runs on the same workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from examples.counter import Counter
from pachyderm import App, Entity, HandleResult, Schedule, current_timer

KEY = "alarm"


@dataclass(frozen=True)
class Arm:
    due: float  # seconds since the epoch


@dataclass(frozen=True)
class Ring:
    pass


@dataclass(frozen=True)
class Armed:
    due: float


@dataclass(frozen=True)
class Rang:
    due: float


class Alarm(Entity[dict[str, Any]]):
    """Armed for a time, then rung once by its timer."""

    commands = (Arm, Ring)
    events = (Armed, Rang)

    def init(self) -> dict[str, Any]:
        return {"rang": 0}

    def handle(self, message: Any, state: dict[str, Any]) -> HandleResult:
        match message:
            case Arm(due=due):
                ring = Schedule(Ring(), at=datetime.fromtimestamp(due, UTC), key=KEY)
                return [Armed(due)], [ring]
            case Ring():
                fired = current_timer()
                return [Rang(fired.due.timestamp() if fired else 0.0)]
        return None

    def update(self, event: Any, state: dict[str, Any]) -> dict[str, Any]:
        if isinstance(event, Rang):
            return {"rang": state["rang"] + 1}
        return state


APP = App([Counter(threshold=None), Alarm()])
SPEC = "bench.timer_app:APP"
ALARM = Alarm.type_name
ARMED = APP.entity_type(ALARM).events.name_of(Armed(0.0))
RANG = APP.entity_type(ALARM).events.name_of(Rang(0.0))
RING = APP.entity_type(ALARM).commands.name_of(Ring())
