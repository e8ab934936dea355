"""One registered entity type at run time: its codecs, its fold and its decisions.

Invariant: an entity type knows only itself, not the app it is registered in;
what needs other types (encoding a ``Send``) is given the app's look-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic

import pydantic

from . import _codec
from ._context import handling
from ._decision import Decision, decision_from
from ._entity import DEFAULT_FINGERPRINT, Entity, StateT
from ._errors import HandlerError, InvalidMessageError, PachydermError
from ._messages import field_problems
from ._plain import plain
from ._reference import Ref
from .store import EventStore, LoadedEntity, NewEvent, RecordedEvent, Snapshot


class UntrustedSnapshotError(PachydermError):
    """A snapshot taken by another version of the state type or fold was given to
    :meth:`EntityType.replay`: a programming error of the caller, which should have
    loaded the entity without it (the runtime never replays one)."""


@dataclass(frozen=True, slots=True)
class Loaded(Generic[StateT]):
    """An entity's state at ``version``; ``rebuilt``: its snapshot was not trusted (taken
    by another version of the state or fold), so the state was folded from every event
    and the next commit should snapshot it again."""

    state: StateT
    version: int
    rebuilt: bool = False
    ended: str | None = None  # how its life ended (store.ENDED, store.ERASED), if it did


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
        self._fingerprint = entity.snapshot_fingerprint()

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
        return NewEvent(name, _codec.encode(data), self.events.schema_version(name))

    def decode_events(self, name: str, data: bytes, schema_version: int = 1) -> list[Any]:
        """The events the current code sees in one stored event (``name`` at
        ``schema_version``): upcast through the registered chain, so none, one or
        several. :class:`NewerSchemaError` if newer code wrote it."""
        return self.events.load_stored(name, _codec.decode_stored(data), schema_version)

    def decode_event(self, name: str, data: bytes, schema_version: int = 1) -> Any:
        """The one event a stored event reads as (:class:`DecodeError` if its upcasters
        split or drop it: use :meth:`decode_events`)."""
        return self.events.load_one(name, _codec.decode_stored(data), schema_version)

    def stored_events(self, events: Iterable[RecordedEvent]) -> Iterator[Any]:
        """The events the current code sees in a stored history, in order."""
        for event in events:
            yield from self.decode_events(event.name, event.data, event.schema_version)

    def dump_state(self, state: StateT) -> Any:
        """The state as plain data (for replies and snapshots)."""
        return self._state.dump_python(state, mode="json")

    def encode_state(self, state: StateT) -> bytes:
        return _codec.encode(self.dump_state(state))

    def decode_state(self, data: bytes) -> StateT:
        try:
            state = _codec.decode_stored(data)  # the store's own bytes: no publisher's limits
            return self._state.validate_python(state)  # type: ignore[no-any-return]
        except pydantic.ValidationError as error:
            raise InvalidMessageError(f"{self.name} state", field_problems(error)) from None

    # -- history -------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """What this code's snapshots are taken by (:meth:`Entity.snapshot_fingerprint`)."""
        return self._fingerprint

    def trusts(self, snapshot: Snapshot | None) -> bool:
        """Whether ``snapshot`` was taken by this code's state type and fold (a snapshot
        without a fingerprint is of version 1 of both); no snapshot is trusted."""
        if snapshot is None:
            return True
        return (snapshot.fingerprint or DEFAULT_FINGERPRINT) == self._fingerprint

    def snapshot(self, version: int, state: StateT) -> Snapshot:
        """A snapshot of ``state`` at ``version``, with this code's fingerprint."""
        return Snapshot(version, self.encode_state(state), self._fingerprint)

    async def load(self, store: EventStore, ref: Ref) -> Loaded[StateT]:
        """The state of ``ref`` as stored: from its snapshot if this code trusts it,
        else from its whole history (then :attr:`Loaded.rebuilt`)."""
        loaded = await store.load(ref)
        rebuilt = not self.trusts(loaded.snapshot)
        if rebuilt:
            loaded = await store.load(ref, use_snapshot=False)
        return Loaded(self.replay(loaded), loaded.version, rebuilt, loaded.ended)

    def replay(self, loaded: LoadedEntity) -> StateT:
        """The state a stored entity is in: its snapshot plus the events after it.

        Raises :class:`UntrustedSnapshotError` for a snapshot another version of the
        state or fold took: load the entity without its snapshot (:func:`load_entity`).
        """
        if not self.trusts(loaded.snapshot):
            raise UntrustedSnapshotError(
                f"{self.name}: the snapshot at version {loaded.version} was taken by "
                f"{loaded.snapshot and loaded.snapshot.fingerprint}, not {self._fingerprint}"
            )
        state = (
            self.decode_state(loaded.snapshot.state) if loaded.snapshot else self.initial_state()
        )
        return self.evolve(state, self.stored_events(loaded.events))
