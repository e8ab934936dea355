"""A timer whose command is for another entity: delivered once, with the timer that fired it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pachyderm import App, Entity, HandleResult, Schedule, current_timer
from pachyderm._embedded import embedded

from ..waiting import eventually


@dataclass(frozen=True)
class SetAlarm:
    bell: str
    seconds: float


@dataclass(frozen=True)
class AlarmSet:
    bell: str


@dataclass(frozen=True)
class Ring:
    pass


@dataclass(frozen=True)
class Rang:
    key: str
    due: str


class Alarm(Entity[dict[str, Any]]):
    commands = (SetAlarm,)
    events = (AlarmSet,)

    def init(self) -> dict[str, Any]:
        return {}

    def handle(self, message: Any, state: dict[str, Any]) -> HandleResult:
        bell = Bell.ref(message.bell)
        ring = Schedule(Ring(), after=timedelta(seconds=message.seconds), key="ring", to=bell)
        return [AlarmSet(message.bell)], [ring]

    def update(self, event: Any, state: dict[str, Any]) -> dict[str, Any]:
        return state


class Bell(Entity[list[Any]]):
    commands = (Ring,)
    events = (Rang,)

    def init(self) -> list[Any]:
        return []

    def handle(self, message: Any, state: list[Any]) -> HandleResult:
        fired = current_timer()
        assert fired is not None, "a ring comes from a timer"
        return [Rang(fired.key, fired.due.isoformat())]

    def update(self, event: Any, state: list[Any]) -> list[Any]:
        return [*state, {"key": event.key, "due": event.due}]


async def test_the_other_entity_gets_the_command_once_with_its_timer() -> None:
    async with embedded(App([Alarm, Bell])) as fleet:
        alarm, bell = Alarm.ref("a"), Bell.ref("b")
        await fleet.client.call(alarm, SetAlarm("b", 0.1))
        [timer] = await fleet.store.entity_timers(alarm.id)

        async def rang() -> bool:
            return bool(await fleet.client.query(bell))

        await eventually(rang, timeout=5)
        assert await fleet.client.query(bell) == [{"key": "ring", "due": timer.due_at.isoformat()}]
        assert await fleet.store.entity_timers(alarm.id) == []
        [event] = await fleet.store.history(bell.id)
        assert event.recorded_at >= timer.due_at
