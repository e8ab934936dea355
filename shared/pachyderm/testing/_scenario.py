"""given / when / then for entity logic, through the same path production takes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from .._app import App
from .._entity import AnyEffect, Entity
from .._entity_type import EntityType
from .._execution import Execution, execute
from .._reference import Ref

_UNSET: Any = object()


def given(
    entity: type[Entity[Any]] | Entity[Any], *events: Any, app: App | None = None
) -> Scenario:
    """Start a scenario: an entity of type ``entity`` whose history is ``events``.

    Pass ``app`` when the entity sends commands to entities of other types.
    """
    instance = entity() if isinstance(entity, type) else entity
    app = app or App([instance])
    return Scenario(app.entity_type(instance.type_name), events, app)


class Scenario:
    """An entity with a known history, ready to receive commands.

    ``app`` holds the entity types its commands may send to (``Send`` effects),
    as the worker's app does.
    """

    def __init__(self, entity_type: EntityType[Any], events: Sequence[Any], app: App) -> None:
        self.entity_type = entity_type
        self.app = app
        self.ref = Ref(entity_type.name, uuid.uuid4())
        # Events go through the codec as they would through the store.
        self.history = [_stored(entity_type, event) for event in events]
        self.state = entity_type.evolve(entity_type.initial_state(), self.history)
        _check_replay(entity_type, self.history, self.state)

    def when(self, command: Any) -> Outcome:
        """Handle ``command`` (after a trip through the wire format) and return the outcome."""
        name, data = self.entity_type.commands.dump(command)
        received = self.entity_type.commands.load(name, data)
        execution = execute(
            self.entity_type,
            self.ref,
            self.state,
            len(self.history),
            received,
            command_id=str(uuid.uuid4()),
            entity_types=self.app.entity_type,
        )
        return Outcome(self, execution)

    def ask(self, query: Any) -> Any:
        """The answer to ``query`` (after a trip through the wire format), as plain data,
        as a caller receives it."""
        return _ask(self.entity_type, self.state, query)


class Outcome:
    """What one command did; assert on it with :meth:`then`, or read the attributes."""

    def __init__(self, scenario: Scenario, execution: Execution) -> None:
        self.scenario = scenario
        self.execution = execution
        self.events = list(execution.events)
        self.effects: list[AnyEffect] = list(execution.effects)
        self.state = execution.state
        self.reply = execution.reply
        self.rejection = execution.rejection
        if self.rejection is None:
            history = scenario.history + [_stored(scenario.entity_type, e) for e in self.events]
            _check_replay(scenario.entity_type, history, self.state)

    def then(
        self,
        *,
        events: Iterable[Any] = _UNSET,
        state: Any = _UNSET,
        reply: Any = _UNSET,
        effects: Iterable[AnyEffect] = _UNSET,
        rejected: str = _UNSET,
    ) -> Outcome:
        """Assert what happened; every argument is optional, give those that matter.

        ``rejected`` is the expected reason; without it a rejection fails the test.
        """
        if rejected is not _UNSET:
            actual = self.rejection.reason if self.rejection else None
            assert actual == rejected, f"expected rejection {rejected!r}, got {actual!r}"
        elif self.rejection is not None:
            raise AssertionError(f"the command was rejected: {self.rejection}")
        _expect("events", events, self.events)
        _expect("state", state, self.state)
        _expect("reply", reply, self.reply)
        _expect("effects", effects, self.effects)
        return self

    def ask(self, query: Any) -> Any:
        """The answer to ``query`` from the state this outcome left, as :meth:`Scenario.ask`."""
        return _ask(self.scenario.entity_type, self.state, query)

    def when(self, command: Any) -> Outcome:
        """Send another command to the entity as this outcome left it."""
        history = self.scenario.history + self.events
        scenario = self.scenario
        return Scenario(scenario.entity_type, history, scenario.app).when(command)


def _ask(entity_type: EntityType[Any], state: Any, query: Any) -> Any:
    name, data = entity_type.queries.dump(query)
    return entity_type.answer(state, entity_type.queries.load(name, data))


def _expect(what: str, expected: Any, actual: Any) -> None:
    if expected is _UNSET:
        return
    if isinstance(expected, Iterable) and isinstance(actual, list):
        expected = list(expected)
    assert actual == expected, f"{what}: expected {expected!r}, got {actual!r}"


def _stored(entity_type: EntityType[Any], event: Any) -> Any:
    new = entity_type.encode_event(event)
    return entity_type.decode_event(new.name, new.data)


def _check_replay(entity_type: EntityType[Any], history: Sequence[Any], state: Any) -> None:
    """Replaying the stored history, and reading a snapshot back, give the live state."""
    replayed = entity_type.evolve(entity_type.initial_state(), history)
    assert replayed == state, (
        f"replaying the history gives {replayed!r}, but the live state is {state!r}: "
        "update() must depend only on the event and the state"
    )
    restored = entity_type.decode_state(entity_type.encode_state(state))
    assert restored == state, (
        f"a snapshot of {state!r} reads back as {restored!r}: "
        f"set {type(entity_type.entity).__name__}.state_type"
    )
