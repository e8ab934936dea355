"""Projections: read models kept from the event log.

A :class:`Projection` is named (its ``name`` names its cursors: renaming one
starts it over) and declares the event classes it handles; the runner
(``pachyderm projections APP``) reads each partition's log after the
projection's cursor, hands it those events in log order (so each entity's in
version order) and then advances the cursor.

- :class:`Projection`: at least once. The cursor advances after ``apply``; a
  runner stopped between the two applies those events again when it resumes,
  so ``apply`` should be idempotent (``context.event_id`` is stable).
- :class:`PostgresProjection`: exactly once. ``apply`` gets
  ``context.connection``, the asyncpg connection inside the transaction in
  which the cursor advances: the read model's writes commit with the cursor, or
  neither does.

Either kind may override ``apply_many`` to take a batch's events at once (one
``executemany`` instead of a round trip per event). ``events = (AnyEvent,)``
declares every event class of the app (the event relay does).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from ._errors import DefinitionError

_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,62}")


class _EveryClass(type):
    """Makes :class:`AnyEvent` match everything in ``isinstance`` and ``issubclass``: the
    runner selects a projection's events with ``issubclass(cls, projection.events)``."""

    def __instancecheck__(cls, instance: object) -> bool:
        return True

    def __subclasscheck__(cls, subclass: type) -> bool:
        return True


class AnyEvent(metaclass=_EveryClass):
    """Stands for every event class of the app in a projection's ``events``:
    ``events = (AnyEvent,)``."""


@dataclass(frozen=True, slots=True)
class ProjectionContext:
    """Where an event comes from, and (exactly once) the transaction to write in."""

    entity_type: str
    entity_id: uuid.UUID
    version: int
    event_id: uuid.UUID
    partition: int
    position: int
    recorded_at: datetime
    # An asyncpg connection inside the cursor's transaction; None at least once.
    connection: Any = None
    # The event as stored: its registered name and encoded bytes ("" and b"": not given),
    # and the version of its type it was written with (None: not given).
    name: str = ""
    data: bytes = b""
    schema_version: int | None = None


class Projection:
    """A read model kept at least once: subclass it, set ``name`` and ``events``,
    and define :meth:`apply`.

    >>> class Totals(Projection):  # doctest: +SKIP
    ...     name = "totals"
    ...     events = (Deposited,)
    ...     async def apply(self, event, context): ...
    """

    name: ClassVar[str]
    events: ClassVar[tuple[type[Any], ...]]
    # Whether apply runs in the cursor's transaction (PostgreSQL only).
    exactly_once: ClassVar[bool] = False
    # False: apply gets each logged event as stored (a RecordedEvent: name, data and
    # schema version as written, none decoded, upcast or filtered by this code), for a
    # projection that passes events on as they are (the event relay): an event this code
    # cannot read, or would split or drop, goes on once, as written.
    decodes: ClassVar[bool] = True

    async def apply(self, event: Any, context: ProjectionContext) -> None:
        """Apply one event to the read model (a projection defines this or
        :meth:`apply_many`; :meth:`check` refuses one that defines neither)."""
        raise DefinitionError(f"{type(self).__qualname__} defines neither apply nor apply_many")

    async def apply_many(self, batch: Sequence[tuple[Any, ProjectionContext]]) -> None:
        """Apply a batch's events, in order; by default :meth:`apply` each. Override it
        to write a batch at once (one ``executemany`` rather than a round trip per event).
        A batch of an exactly-once projection run by ``pachyderm projections`` may hold
        several partitions' events (those ready together, one transaction), each
        partition's in log order."""
        for event, context in batch:
            await self.apply(event, context)

    async def clear(self, connection: Any) -> None:
        """Empty the read model before a rebuild (``connection``: as in ``apply``)."""

    def registered(self, app: object) -> None:
        """Called once ``app`` (a :class:`~pachyderm.App`: not named here, which imports
        this module) has checked and registered this projection; a projection that needs
        the app's entity types, such as the event relay, keeps it."""

    def handles(self, event: object) -> bool:
        """Whether ``event`` is of a class this projection declares."""
        return isinstance(event, self.events)

    def check(self) -> None:
        """Raise :class:`DefinitionError` unless ``name`` and ``events`` are well formed."""
        name = getattr(self, "name", None)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise DefinitionError(
                f"{type(self).__qualname__}.name must match {_NAME.pattern}, got {name!r}"
            )
        events = getattr(self, "events", None)
        if (
            not isinstance(events, tuple)
            or not events
            or not all(isinstance(cls, type) for cls in events)
        ):
            raise DefinitionError(
                f"projection {name!r}: events must be a non-empty tuple of event classes"
            )
        cls = type(self)
        if cls.apply is Projection.apply and cls.apply_many is Projection.apply_many:
            raise DefinitionError(f"projection {name!r} defines neither apply nor apply_many")


class PostgresProjection(Projection):
    """A read model in PostgreSQL, kept exactly once: ``apply`` writes through
    ``context.connection``, in the transaction that advances the cursor.

    :meth:`clear` (for a rebuild) runs in the transaction that resets the cursors.
    """

    exactly_once = True
