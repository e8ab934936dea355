"""given / when / then for entity logic, through the same path production takes.

Time passes only when a test says so (:meth:`Outcome.after`): the due timers
then fire in order, each at its due time, as the fleet fires them: the tick
the plan chooses, the command id it derives, the timer's own write (consumed
or moved on) before the handler's timer writes, and ``current_timer()`` set.
A timer whose command is for another entity shows as the ``Send`` the fleet
would deliver.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from .._app import App
from .._effects import Send
from .._ending import ended_error
from .._entity import AnyEffect, Entity
from .._entity_type import EntityType
from .._execution import Execution, execute
from .._reference import Ref
from .._timers import FiredTimer, Schedule
from ..store import ENDED, Change
from ._stored_event import StoredEvent
from ._timeline import START, Pending, Timeline

_UNSET: Any = object()


def given(
    entity: type[Entity[Any]] | Entity[Any],
    *events: Any,
    app: App | None = None,
    now: datetime = START,
) -> Scenario:
    """Start a scenario: an entity of type ``entity`` whose history is ``events``.

    An event may be a :class:`StoredEvent`: one as older code stored it, which the
    entity's upcasters bring to the current version (none, one or several events),
    as a cold load does; :meth:`Scenario.then` asserts what the code then sees.

    Pass ``app`` when the entity sends commands to entities of other types.
    The scenario's clock starts at ``now`` and moves only with :meth:`Outcome.after`.
    """
    instance = entity() if isinstance(entity, type) else entity
    app = app or App([instance])
    return Scenario(app.entity_type(instance.type_name), events, app, Timeline(now))


class Scenario:
    """An entity with a known history, ready to receive commands.

    ``app`` holds the entity types its commands may send to (``Send`` effects),
    as the worker's app does.
    """

    def __init__(
        self,
        entity_type: EntityType[Any],
        events: Sequence[Any],
        app: App,
        timeline: Timeline | None = None,
        ref: Ref | None = None,
        *,
        ended: bool = False,
    ) -> None:
        self.entity_type = entity_type
        self.ended = ended  # its handler ended it: commands are refused, as the fleet does
        self.app = app
        self.timeline = timeline or Timeline()
        self.ref = ref or Ref(entity_type.name, uuid.uuid4())
        # Events go through the codec (and upcasters) as they would through the store.
        self.history = [seen for event in events for seen in _seen(entity_type, event)]
        self.state = entity_type.evolve(entity_type.initial_state(), self.history)
        _check_replay(entity_type, self.history, self.state)

    def then(self, *, events: Iterable[Any] = _UNSET, state: Any = _UNSET) -> Scenario:
        """Assert the history as the current code sees it (``events``: stored ones upcast)
        and the state it folds into, before any command."""
        _expect("events", events, self.history)
        _expect("state", state, self.state)
        return self

    def when(self, command: Any) -> Outcome:
        """Handle ``command`` (after a trip through the wire format) and return the outcome."""
        name, data = self.entity_type.commands.dump(command)
        received = self.entity_type.commands.load(name, data)
        return Outcome(self, self.execute(received, str(uuid.uuid4())))

    def execute(self, command: Any, command_id: str, timer: FiredTimer | None = None) -> Execution:
        """Decide ``command`` (as received, typed) now, as the worker does; no assertion.
        An ended entity refuses it (:class:`~pachyderm.EntityEndedError`), as the fleet does."""
        if self.ended:
            raise ended_error(self.ref, ENDED, len(self.history))
        return execute(
            self.entity_type,
            self.ref,
            self.state,
            len(self.history),
            command,
            command_id=command_id,
            entity_types=self.app.entity_type,
            now=self.timeline.now,
            timer=timer,
        )

    def ask(self, query: Any) -> Any:
        """The answer to ``query`` (after a trip through the wire format), as plain data,
        as a caller receives it."""
        return _ask(self.entity_type, self.state, query)


class Outcome:
    """What one command did (or letting time pass did: :meth:`after`); assert on it
    with :meth:`then`, or read the attributes."""

    def __init__(self, scenario: Scenario, execution: Execution) -> None:
        self.scenario = scenario
        self.execution = execution
        self.events = list(execution.events)
        self.effects: list[AnyEffect] = list(execution.effects)
        self.state = execution.state
        self.reply = execution.reply
        self.rejection = execution.rejection
        self.ended = execution.change.ends
        """The command ended the entity (``End``): a later one is refused."""
        self.timeline = scenario.timeline.copy()
        self.fired: list[FiredTimer] = []
        """The timers that fired while time passed (:meth:`after`), in order."""
        if self.rejection is None:
            self.timeline.apply(execution.change)
            history = scenario.history + [_stored(scenario.entity_type, e) for e in self.events]
            _check_replay(scenario.entity_type, history, self.state)

    @property
    def now(self) -> datetime:
        """The scenario's clock after this outcome."""
        return self.timeline.now

    @property
    def pending(self) -> list[Pending]:
        """The entity's pending timers after this outcome, soonest first."""
        return self.timeline.pending(self.scenario.entity_type, self.scenario.app.entity_type)

    @property
    def scheduled(self) -> list[Schedule]:
        """The timers this outcome's commands scheduled, in order."""
        return [effect for effect in self.effects if isinstance(effect, Schedule)]

    def after(
        self, delta: timedelta | None = None, /, *, outage: bool = False, **units: float
    ) -> Outcome:
        """Let ``delta`` (or ``timedelta(**units)``) pass: the due timers fire, in order,
        each at its due time, as a running fleet fires them.

        With ``outage``, nothing runs meanwhile: what fell due fires at the end, by
        each timer's missed-fire policy. The outcome gathers what the fired
        commands did (events, effects; reply and rejection of the last), and
        :attr:`fired` the timers. A timer's command for another entity is kept
        in :attr:`effects` as the ``Send`` the fleet would deliver.
        """
        return _pass_time(self, delta if delta is not None else timedelta(**units), outage)

    def then(
        self,
        *,
        events: Iterable[Any] = _UNSET,
        state: Any = _UNSET,
        reply: Any = _UNSET,
        effects: Iterable[AnyEffect] = _UNSET,
        rejected: str = _UNSET,
        scheduled: Iterable[Schedule] = _UNSET,
        pending: Iterable[Pending] = _UNSET,
        ended: bool = _UNSET,
    ) -> Outcome:
        """Assert what happened; every argument is optional, give those that matter.

        ``rejected`` is the expected reason; without it a rejection fails the test.
        ``scheduled``: the ``Schedule`` effects returned; ``pending``: the timers
        pending afterwards (:class:`Pending`, soonest first); ``ended``: whether the
        command ended the entity.
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
        _expect("scheduled", scheduled, self.scheduled)
        _expect("pending", pending, self.pending)
        _expect("ended", ended, self.ended)
        return self

    def ask(self, query: Any) -> Any:
        """The answer to ``query`` from the state this outcome left, as :meth:`Scenario.ask`."""
        return _ask(self.scenario.entity_type, self.state, query)

    def when(self, command: Any) -> Outcome:
        """Send another command to the entity as this outcome left it."""
        return self.next_scenario().when(command)

    def next_scenario(self) -> Scenario:
        """The entity as this outcome left it, at this outcome's time, with its timers."""
        scenario = self.scenario
        return Scenario(
            scenario.entity_type,
            scenario.history + self.events,
            scenario.app,
            self.timeline.copy(),
            scenario.ref,
            ended=scenario.ended or self.ended,
        )


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
    return entity_type.decode_event(new.name, new.data, new.schema_version)


def _seen(entity_type: EntityType[Any], event: Any) -> list[Any]:
    """What the current code sees of a given event: a stored one upcast, else the
    event after a trip through the codec."""
    if isinstance(event, StoredEvent):
        return event.read(entity_type)
    return [_stored(entity_type, event)]


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


# -- letting time pass ---------------------------------------------------------

_MOST_FIRES = 100_000  # a periodic timer with a tiny period must not loop forever


def _pass_time(outcome: Outcome, delta: timedelta, outage: bool) -> Outcome:
    """The outcome of letting ``delta`` pass after ``outcome`` (see :meth:`Outcome.after`)."""
    if delta < timedelta(0):
        raise ValueError("time only moves forward")
    target = outcome.now + delta
    current = _at(outcome, target) if outage else outcome
    events: list[Any] = []
    effects: list[AnyEffect] = []
    fired: list[FiredTimer] = []
    for _ in range(_MOST_FIRES):
        timer = current.timeline.next_due(target)
        if timer is None:
            break
        scenario = current.next_scenario()
        scenario.timeline.now = max(timer.due_at, scenario.timeline.now)
        plan, spec = scenario.timeline.plan(timer)
        scenario.timeline.apply(Change(scenario.ref, 0, "fire", timers=plan.writes(timer)))
        if plan.fired is None:  # its ticks were dropped
            current = Outcome(scenario, _nothing(scenario))
            continue
        fired.append(plan.fired)
        if spec.to is not None and spec.to != scenario.ref:
            target_type = scenario.app.entity_type(spec.to.type)
            sent = target_type.commands.load_one(spec.command, spec.data, spec.schema_version)
            effects.append(Send(spec.to, sent))
            current = Outcome(scenario, _nothing(scenario))
            continue
        command = scenario.entity_type.commands.load_one(
            spec.command, spec.data, spec.schema_version
        )
        current = Outcome(scenario, scenario.execute(command, plan.command_id, plan.fired))
        events.extend(current.events)
        effects.extend(current.effects)
    current = _at(current, target)
    current.events, current.effects, current.fired = events, effects, fired
    return current


def _nothing(scenario: Scenario) -> Execution:
    """An execution that changes nothing (no event, no timer write)."""
    version = len(scenario.history)
    return Execution(scenario.state, version, Change(scenario.ref, version, "nothing"))


def _at(outcome: Outcome, when: datetime) -> Outcome:
    """``outcome`` with the clock moved on to ``when`` (never back)."""
    scenario = outcome.next_scenario()
    scenario.timeline.now = max(when, scenario.timeline.now)
    return Outcome(scenario, _nothing(scenario))
