"""The programming model: entities with pure ``init``, ``handle`` and ``update``."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from ._effects import Effect, Send
from ._errors import DefinitionError
from ._messages import MessageTypes, MessageTypesSpec
from ._reference import Ref, check_type_name
from ._timers import Cancel, Schedule
from ._upcasting import Upcaster, schema_version_of

StateT = TypeVar("StateT")

AnyEffect = Effect | Send | Schedule | Cancel


@dataclass(frozen=True, slots=True)
class Reply:
    """An explicit reply, optionally with events and effects.

    Without it the caller's reply is the entity's new state.
    """

    value: Any
    events: Sequence[Any] = ()
    effects: Sequence[AnyEffect] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the command: nothing is written and the caller gets ``reason``.

    ``reason`` is a short machine-readable string such as ``"insufficient_funds"``;
    ``detail`` is optional plain data for the caller.
    """

    reason: str
    detail: Any = None


class _FinalState:
    def __repr__(self) -> str:
        return "FINAL_STATE"


_FINAL_STATE: Any = _FinalState()


@dataclass(frozen=True, slots=True)
class End:
    """End the entity after ``events`` (the original's "Stop event that caches the final
    snapshot"), as Akka's ``thenStop`` ends a persistent actor, but for good.

    The events and effects commit as any; the state they leave is snapshotted in
    the same commit as the final state, and the entity is marked ended: every later
    command is answered ``ended`` (:class:`~pachyderm.EntityEndedError`) and never
    handled, while queries still read the final state. Its pending timers are
    dropped. The caller's reply is ``reply`` when given, else the final state.
    ``events`` must not be empty: the end is a fact of the history (the event that
    says why), recorded like any other.
    """

    events: Sequence[Any] = ()
    effects: Sequence[AnyEffect] = ()
    reply: Any = _FINAL_STATE


HandleResult = (
    None | Sequence[Any] | tuple[Sequence[Any], Sequence[AnyEffect]] | Reply | Reject | End
)


def fingerprint(state_version: int, update_version: int) -> str:
    """The snapshot fingerprint of a state type at ``state_version`` folded by an
    ``update`` at ``update_version``."""
    return f"state={state_version};update={update_version}"


DEFAULT_FINGERPRINT = fingerprint(1, 1)
"""What a snapshot without a fingerprint (taken before they were recorded) was taken by."""


def _attach_upcasters(cls: type[Entity[Any]]) -> None:
    """Give each of ``cls.upcasters`` to the registry whose name it upcasts, then check
    the chains (:class:`DefinitionError`)."""
    registries = {"event": cls.event_types, "command": cls.command_types}
    for step in cls.upcasters:
        if not isinstance(step, Upcaster):
            raise DefinitionError(
                f"{cls.__qualname__}.upcasters holds {step!r}; decorate it with @upcaster"
            )
        kind, name = _upcast_target(cls, step)
        registries[kind].evolution.add(name, step)
    for registry in registries.values():
        registry.evolution.check()


def _upcast_target(cls: type[Entity[Any]], step: Upcaster) -> tuple[str, str]:
    """(kind, stored name) of what ``step`` upcasts."""
    registries = {"event": cls.event_types, "command": cls.command_types}
    if isinstance(step.target, type):
        for kind, registry in registries.items():
            for name, registered in registry.types():
                if registered is step.target:
                    return kind, name
        raise DefinitionError(
            f"the upcaster of {step.target.__qualname__} names a class that "
            f"{cls.__qualname__} registers as neither event nor command"
        )
    if step.kind is not None:
        return step.kind, step.target
    kinds = [
        kind
        for kind, registry in registries.items()
        if step.target in registry.evolution.current or step.target in registry.evolution.aliases
    ]
    if len(kinds) > 1:
        raise DefinitionError(
            f"{step.target!r} names both an event and a command of {cls.__qualname__}: "
            "give the upcaster its class or kind="
        )
    return (kinds[0] if kinds else "event"), step.target


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Entity(ABC, Generic[StateT]):
    """Base class of entity types.

    Subclasses list their message types and implement three pure methods::

        class Counter(Entity[dict]):
            commands = [Increment]
            events = [Increased]

            def init(self): return {"count": 0}
            def handle(self, message, state): ...
            def update(self, event, state): ...

    ``type_name`` defaults to the snake-cased class name; set it explicitly
    before renaming the class, since stored histories are filed under it.
    ``commands`` and ``events`` take classes (registered under their class
    names) or a mapping of stable name to class; ``queries`` likewise, for
    read-only questions answered by :meth:`query`. Commands and queries are read
    strictly (a field their type does not declare is an
    :class:`InvalidMessageError` naming it), events and the state tolerantly
    (unknown fields ignored); a type that sets pydantic's ``extra`` is read as it
    says. ``state_type`` tells how to read the state back from a snapshot when it
    is not plain data.

    Evolution (see :func:`pachyderm.upcaster`): a message type declares
    ``schema_version`` and ``schema_aliases`` (old names); ``upcasters`` lists the
    steps that bring stored events (and commands) of older versions to the current
    ones. ``update_version`` (default 1) is the fold's version: bump it when
    ``update`` folds the same events into a different state, as the state type's
    ``schema_version`` when the state's shape changes; a snapshot taken by other
    versions of either is ignored and the state rebuilt from the events.
    """

    type_name: ClassVar[str]
    commands: ClassVar[MessageTypesSpec] = ()
    events: ClassVar[MessageTypesSpec] = ()
    queries: ClassVar[MessageTypesSpec] = ()
    state_type: ClassVar[Any] = Any
    upcasters: ClassVar[Sequence[Upcaster]] = ()
    update_version: ClassVar[int] = 1

    command_types: ClassVar[MessageTypes]
    event_types: ClassVar[MessageTypes]
    query_types: ClassVar[MessageTypes]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type_name" not in cls.__dict__:
            cls.type_name = _snake_case(cls.__name__)
        check_type_name(cls.type_name)
        # Strict where a caller writes, tolerant where history is read.
        cls.command_types = MessageTypes("command", cls.commands, extra="forbid")
        cls.event_types = MessageTypes("event", cls.events)
        cls.query_types = MessageTypes("query", cls.queries, extra="forbid")
        _attach_upcasters(cls)
        if not isinstance(cls.update_version, int) or cls.update_version < 1:
            raise DefinitionError(
                f"{cls.__qualname__}.update_version must be an int of 1 or more, "
                f"not {cls.update_version!r}"
            )
        schema_version_of(cls.state_type)  # refused now, not at the first snapshot

    @classmethod
    def snapshot_fingerprint(cls) -> str:
        """What a snapshot of this entity is taken by: its state type's and fold's
        versions. A snapshot with another fingerprint is not trusted."""
        return fingerprint(schema_version_of(cls.state_type), cls.update_version)

    @classmethod
    def ref(cls, key: str) -> Ref:
        """Reference the entity of this type known by the natural ``key``."""
        return Ref.from_key(cls.type_name, key)

    @abstractmethod
    def init(self) -> StateT:
        """The state of an entity that has no events yet."""

    @abstractmethod
    def handle(self, message: Any, state: StateT) -> HandleResult:
        """Decide what ``message`` means for ``state``; pure: decide, never do.

        Return events; ``(events, effects)``; a :class:`Reply`; a
        :class:`Reject`; or :class:`End` to end the entity. ``None`` means no events.
        """

    @abstractmethod
    def update(self, event: Any, state: StateT) -> StateT:
        """Fold one event into the state; pure."""

    def query(self, query: Any, state: StateT) -> Any:
        """Answer a read-only ``query`` (one of ``queries``) from the state; pure.

        The default answers the plain query (``None``) with the state itself.
        """
        return state
