"""The tally's second version: amounts in cents (``Added`` at version 2, with the
upcaster from 1), a new event every third addition, and another fold (its
``update_version`` is 2, so the first version's snapshots are not trusted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pachyderm import App, Entity, upcaster

TallyState = dict[str, int]


@dataclass(frozen=True)
class Add:
    amount: int  # euros, as in version 1: commands did not change


@dataclass(frozen=True)
class Added:
    schema_version: ClassVar[int] = 2
    cents: int


@dataclass(frozen=True)
class Milestone:
    count: int


@upcaster(Added, 1)
def euros_to_cents(data: dict[str, Any]) -> dict[str, Any]:
    return {"cents": data["amount"] * 100}


class Tally(Entity[TallyState]):
    type_name = "tally"
    commands = (Add,)
    events = (Added, Milestone)
    upcasters = (euros_to_cents,)
    update_version = 2

    def init(self) -> TallyState:
        return {"cents": 0, "count": 0, "milestones": 0}

    def handle(self, message: Add, state: TallyState) -> list[Any]:
        events: list[Any] = [Added(message.amount * 100)]
        if (state["count"] + 1) % 3 == 0:
            events.append(Milestone(state["count"] + 1))
        return events

    def update(self, event: Any, state: TallyState) -> TallyState:
        match event:
            case Added(cents=cents):
                return {**state, "cents": state["cents"] + cents, "count": state["count"] + 1}
            case Milestone():
                return {**state, "milestones": state["milestones"] + 1}
        return state


APP = App([Tally])
