"""A membership that its holder closes for good (``End``), for the end-of-life tests;
served by worker processes as ``tests.ending.membership:APP``."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from pachyderm import App, End, Entity, HandleResult, Reject, Reply


class Join(BaseModel):
    name: str


class Visit(BaseModel):
    pass


class Close(BaseModel):
    reason: str


class Joined(BaseModel):
    name: str


class Visited(BaseModel):
    pass


class Closed(BaseModel):
    reason: str


class Membership(Entity[dict[str, Any]]):
    commands: ClassVar = [Join, Visit, Close]
    events: ClassVar = [Joined, Visited, Closed]

    def init(self) -> dict[str, Any]:
        return {"name": None, "visits": 0, "closed": None}

    def handle(self, message: Any, state: dict[str, Any]) -> HandleResult:
        match message:
            case Join(name=name):
                return [Joined(name=name)]
            case Visit() if state["name"] is None:
                return Reject("not_a_member")
            case Visit():
                return [Visited()]
            case Close(reason=reason):
                return End([Closed(reason=reason)])
        return None

    def update(self, event: Any, state: dict[str, Any]) -> dict[str, Any]:
        match event:
            case Joined(name=name):
                return {**state, "name": name}
            case Visited():
                return {**state, "visits": state["visits"] + 1}
            case Closed(reason=reason):
                return {**state, "closed": reason}
        return state


class Silent(Entity[dict[str, Any]]):
    """Ends with an explicit reply, or (wrongly) without an event."""

    commands: ClassVar = [Close, Visit]
    events: ClassVar = [Closed]

    def init(self) -> dict[str, Any]:
        return {}

    def handle(self, message: Any, state: dict[str, Any]) -> HandleResult:
        if isinstance(message, Close):
            return End([Closed(reason=message.reason)], reply="bye") if message.reason else End()
        return Reply("hello")

    def update(self, event: Any, state: dict[str, Any]) -> dict[str, Any]:
        return {"closed": True}


APP = App([Membership, Silent])
