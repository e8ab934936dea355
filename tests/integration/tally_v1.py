"""A tally, as its first version of the code writes it: amounts in euros.

Half of the rolling-deploy test's two code versions (``tally_v2`` is the other).
"""

from __future__ import annotations

from dataclasses import dataclass

from pachyderm import App, Entity

TallyState = dict[str, int]


@dataclass(frozen=True)
class Add:
    amount: int


@dataclass(frozen=True)
class Added:
    amount: int  # euros


class Tally(Entity[TallyState]):
    type_name = "tally"
    commands = (Add,)
    events = (Added,)

    def init(self) -> TallyState:
        return {"total": 0, "count": 0}

    def handle(self, message: Add, state: TallyState) -> list[Added]:
        return [Added(message.amount)]

    def update(self, event: Added, state: TallyState) -> TallyState:
        return {"total": state["total"] + event.amount, "count": state["count"] + 1}


APP = App([Tally])
