"""An app with poison commands: a :class:`Poison` misbehaves while its switch file
exists (hangs its worker's event loop, for good or for 20 s, kills its process,
or raises past the worker's error handling), and applies normally once the file is gone, which is
how a fix is deployed before an operator resumes it. :class:`Arm` makes one a timer's."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta

from pachyderm import App, Entity, HandleResult, Schedule

LaneState = dict[str, list[int]]


class Crash(BaseException):
    """What a worker dying mid-handler looks like in process: nothing catches it."""


@dataclass(frozen=True)
class Step:
    n: int


@dataclass(frozen=True)
class Poison:
    mode: str  # hang, spin, exit or crash
    switch: str  # a file path: while it exists, the command misbehaves


@dataclass(frozen=True)
class Arm:
    """Schedule ``poison`` to fire at this lane in ``seconds`` (a poison timer)."""

    poison: Poison
    seconds: float


@dataclass(frozen=True)
class Stepped:
    n: int


class Lane(Entity[LaneState]):
    """Records the steps it is given, in order; a cured poison records step -1."""

    type_name = "lane"
    commands = (Step, Poison, Arm)
    events = (Stepped,)

    def init(self) -> LaneState:
        return {"steps": []}

    def handle(self, message: Step | Poison | Arm, state: LaneState) -> HandleResult:
        if isinstance(message, Arm):
            later = timedelta(seconds=message.seconds)
            return [Stepped(0)], [Schedule(message.poison, after=later)]
        if isinstance(message, Poison):
            if os.path.exists(message.switch):
                misbehave(message.mode)
            return [Stepped(-1)]
        return [Stepped(message.n)]

    def update(self, event: Stepped, state: LaneState) -> LaneState:
        return {"steps": [*state["steps"], event.n]}


def misbehave(mode: str) -> None:
    if mode == "exit":
        os._exit(3)
    if mode == "crash":
        raise Crash(mode)
    if mode == "spin":  # hang, for a test in process: gives up after a while
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pass
        return
    while True:  # hang: blocks the event loop for good
        pass


APP = App([Lane])
