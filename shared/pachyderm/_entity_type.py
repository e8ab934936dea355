"""One registered entity type at run time: its codecs, its fold and its decisions.

Invariant: an entity type knows only itself, not the app it is registered in;
what needs other types (encoding a ``Send``) is given the app's look-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic

import pydantic

from . import _codec
from ._context import handling
from ._decision import Decision, decision_from
from ._entity import Entity, StateT
from ._errors import HandlerError, InvalidMessageError
from ._messages import field_problems
from ._plain import plain
from ._reference import Ref
from .store import LoadedEntity, NewEvent


class EntityType(Generic[StateT]):
    """Wraps a user's :class:`Entity` with everything the runtime needs around it.

    User code runs only through :meth:`initial_state`, :meth:`evolve` and
    :meth:`decide`; whatever it raises comes out as :class:`HandlerError`.
    """

    def __init__(self, entity: Entity[StateT]) -> None:
        self.entity = entity
        self.name = entity.type_name
        self.commands = entity.command_types
        self.events = entity.event_types
        self.queries = entity.query_types
        self._state = pydantic.TypeAdapter[Any](entity.state_type)

    # -- user code -------------------------------------------------------------

    def initial_state(self) -> StateT:
        try:
            return self.entity.init()
        except Exception as error:
            raise HandlerError(f"{self.name}.init raised {error!r}") from error

    def evolve(self, state: StateT, events: Iterable[Any]) -> StateT:
        """Fold ``events`` into ``state`` with the entity's ``update``."""
        for event in events:
            try:
                state = self.entity.update(event, state)
            except Exception as error:
                raise HandlerError(
                    f"{self.name}.update raised {error!r} on {type(event).__name__}"
                ) from error
        return state

    def decide(self, ref: Ref, state: StateT, command: Any) -> Decision:
        """Run the entity's ``handle`` for ``ref`` and normalise what it returned."""
        try:
            with handling(ref):
                result = self.entity.handle(command, state)
        except Exception as error:
            raise HandlerError(
                f"{self.name}.handle raised {error!r} on {type(command).__name__}"
            ) from error
        decision = decision_from(result)
        for event in decision.events:
            if event not in self.events:
                raise HandlerError(
                    f"{self.name}.handle returned {event!r}, which is not a registered event"
                )
        return decision

    def answer(self, state: StateT, query: Any) -> Any:
        """Run the entity's read-only ``query``; its answer as plain data."""
        try:
            answer = self.entity.query(query, state)
        except Exception as error:
            raise HandlerError(f"{self.name}.query raised {error!r}") from error
        return self.dump_state(answer) if answer is state else plain(answer)

    # -- encoding ----------------------------------------------------------------

    def encode_event(self, event: Any) -> NewEvent:
        name, data = self.events.dump(event)
        return NewEvent(name, _codec.encode(data))

    def decode_event(self, name: str, data: bytes) -> Any:
        return self.events.load(name, _codec.decode(data))

    def dump_state(self, state: StateT) -> Any:
        """The state as plain data (for replies and snapshots)."""
        return self._state.dump_python(state, mode="json")

    def encode_state(self, state: StateT) -> bytes:
        return _codec.encode(self.dump_state(state))

    def decode_state(self, data: bytes) -> StateT:
        try:
            return self._state.validate_python(_codec.decode(data))  # type: ignore[no-any-return]
        except pydantic.ValidationError as error:
            raise InvalidMessageError(f"{self.name} state", field_problems(error)) from None

    # -- history -------------------------------------------------------------------

    def replay(self, loaded: LoadedEntity) -> StateT:
        """The state a stored entity is in: its snapshot plus the events after it."""
        state = (
            self.decode_state(loaded.snapshot.state) if loaded.snapshot else self.initial_state()
        )
        return self.evolve(state, (self.decode_event(e.name, e.data) for e in loaded.events))
