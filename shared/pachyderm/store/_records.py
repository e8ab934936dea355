"""What goes into and comes out of an event store: plain records of bytes.

The store never sees Python message types: events, states, replies and
effects arrive encoded. That keeps the backends small and lets every backend
pass one contract suite.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .._reference import Ref


def encode_trace(trace: Mapping[str, str] | None) -> str | None:
    """A trace context as the outbox stores it: a JSON object, or NULL."""
    return json.dumps(dict(trace), separators=(",", ":")) if trace else None


def decode_trace(stored: str | None) -> Mapping[str, str] | None:
    """The trace context a stored one names (None: none, or none readable)."""
    if stored is None:
        return None
    try:
        decoded = json.loads(stored)
    except ValueError:
        return None
    if not isinstance(decoded, dict):
        return None
    return {key: value for key, value in decoded.items() if isinstance(value, str)} or None


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended: its registered name and encoded payload, and
    ``schema_version``, the version of its type it was encoded with (from 1)."""

    name: str
    data: bytes
    schema_version: int = 1


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """A committed event. ``version`` is the entity's version once it applied (from 1);
    ``schema_version`` the version of the event's type it was written with (from 1;
    events written before schema versions existed are at 1)."""

    entity_id: uuid.UUID
    version: int
    name: str
    data: bytes
    command_id: str | None
    recorded_at: datetime
    schema_version: int = 1


def event_id(entity_id: uuid.UUID, version: int) -> uuid.UUID:
    """The stable id of an entity's event at ``version``: the same wherever it is read."""
    return uuid.uuid5(entity_id, f"event/{version}")


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event in the log: at ``position`` (from 1, gap-free, in commit order) of
    ``partition``, with its entity's type."""

    partition: int
    position: int
    entity_type: str
    event: RecordedEvent

    @property
    def event_id(self) -> uuid.UUID:
        return event_id(self.event.entity_id, self.event.version)


@dataclass(frozen=True, slots=True)
class ListedEntity:
    """An entity as a listing shows it: its current version and when it last changed."""

    entity_id: uuid.UUID
    version: int
    updated_at: datetime

    def cursor(self, *, by_change: bool = False) -> uuid.UUID | tuple[datetime, uuid.UUID]:
        """What to list ``after`` for the page after this entity, in the same order."""
        return (self.updated_at, self.entity_id) if by_change else self.entity_id


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The encoded state of an entity as of ``version`` (1 or more: the state before any
    event is the entity's ``init``, which needs no snapshot and which the schema refuses).

    ``fingerprint`` names the code that wrote it (the state type's and the fold's
    versions); the store keeps it as given. None: written before fingerprints existed.
    """

    version: int
    state: bytes
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"a snapshot is of version 1 or later, not {self.version}")


@dataclass(frozen=True, slots=True)
class NewEffect:
    """An effect for the outbox. ``destination`` becomes the effects exchange's routing key."""

    effect_id: uuid.UUID
    destination: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An effect waiting in the outbox, with where it came from.

    ``attempts`` counts the publishes of it that failed so far; ``trace`` is
    the trace context of the command that made it (W3C headers), if traced.
    """

    effect_id: uuid.UUID
    destination: str
    payload: bytes
    entity_id: uuid.UUID
    command_id: str
    created_at: datetime
    attempts: int = 0
    trace: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class TimerWrite:
    """Put the timer ``key`` of a change's entity (``payload`` given) or delete it (None).

    ``payload`` is the timer as the runtime encoded it (what to deliver, and how
    often); the store keeps it as it is. ``schedule_id`` names this scheduling
    of the key: it tells a timer apart from the one that replaced it.
    """

    key: str
    due_at: datetime | None = None
    schedule_id: str = ""
    payload: bytes | None = None

    def __post_init__(self) -> None:
        if self.payload is not None and (self.due_at is None or not self.schedule_id):
            raise ValueError("a timer put needs its due time and schedule id")


@dataclass(frozen=True, slots=True)
class TimerFire:
    """A change that fires the timer ``key`` scheduled as ``schedule_id`` for ``due_at``.

    It commits only if that very timer is still pending (not cancelled, replaced
    or fired meanwhile) and due by the store's clock; otherwise it writes
    nothing and its outcome is :class:`TimerGone`.
    """

    key: str
    schedule_id: str
    due_at: datetime


# A held timer's next try is put off this long: it waits for an operator's release.
HELD_FOR = timedelta(days=36_525)


@dataclass(frozen=True, slots=True)
class StoredTimer:
    """A pending timer: of ``entity_id``, fired by the owner of ``partition``.

    ``due_at`` is when it falls due; ``fire_at`` when the next try is, later
    than ``due_at`` only after ``attempts`` failed tries.
    """

    entity_id: uuid.UUID
    entity_type: str
    key: str
    partition: int
    due_at: datetime
    schedule_id: str
    payload: bytes
    fire_at: datetime
    attempts: int = 0

    @property
    def held(self) -> bool:
        """Held after its attempts (see :data:`HELD_FOR`), not merely backed off."""
        return self.fire_at - self.due_at > HELD_FOR / 2


@dataclass(frozen=True, slots=True)
class Change:
    """What one command did to one entity, to be committed atomically with others.

    The change applies only if the entity is still at ``expected_version`` and
    ``command_id`` was never committed for this entity before. ``snapshot``,
    when given, must be the state at ``expected_version + len(events)``.
    ``trace``, the command's trace context (W3C headers), is kept with its
    effects so that they continue its trace even when published by the sweep.
    ``timers`` are written in order (the last write of a key wins), in
    ``partition``, the partition whose owner fires them; ``fires``, when given,
    makes the change conditional on that timer (see :class:`TimerFire`).
    ``ends``: the change ends its entity (its ``snapshot``, when the entity has a
    version, is the final state); the store refuses every later change to it
    (:class:`Ended`) and deletes its pending timers.
    """

    ref: Ref
    expected_version: int
    command_id: str
    events: Sequence[NewEvent] = ()
    reply: bytes = b""
    effects: Sequence[NewEffect] = ()
    snapshot: Snapshot | None = None
    trace: Mapping[str, str] | None = None
    timers: Sequence[TimerWrite] = ()
    fires: TimerFire | None = None
    partition: int = 0
    ends: bool = False

    @property
    def new_version(self) -> int:
        return self.expected_version + len(self.events)

    def __post_init__(self) -> None:
        if self.expected_version < 0:
            raise ValueError("expected_version must not be negative")
        if not self.command_id:
            raise ValueError("a change needs a command id")
        if self.snapshot is not None and self.snapshot.version != self.new_version:
            raise ValueError(
                f"snapshot at version {self.snapshot.version} does not match "
                f"the new version {self.new_version}"
            )


@dataclass(frozen=True, slots=True)
class Committed:
    """The change is durable; the entity is now at ``version``."""

    version: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The command id was committed before: nothing was written; here is its reply."""

    reply: bytes
    version: int


@dataclass(frozen=True, slots=True)
class Conflict:
    """The entity moved on (or is of another type): nothing was written.

    ``actual_version`` is the entity's version when the commit looked.
    """

    actual_version: int


@dataclass(frozen=True, slots=True)
class TimerGone:
    """The change fired a timer that is no longer pending as it was, or not yet due
    by the store's clock (:class:`TimerFire`): nothing was written."""

    version: int


ENDED, ERASED = "ended", "erased"
"""How an entity's life ended (``entities.ended``): by its handler, or by an operator."""

ERASED_VERSION = -1
"""The version an erased entity reads at (:meth:`EventStore.load`, :meth:`EventStore.versions`):
no state of it is current, whatever was cached. Its tombstone keeps the version it had."""


@dataclass(frozen=True, slots=True)
class Ended:
    """The entity was ended (``how``: :data:`ENDED`) or erased (:data:`ERASED`) before
    this change: nothing was written. ``version`` is the entity's version as it ended."""

    version: int
    how: str = ENDED


@dataclass(frozen=True, slots=True)
class Fenced:
    """The entity is parked behind a quarantined command (policy ``park``), and this
    change runs neither that command, resumed, nor one parked behind it: nothing was
    written. The worker that made it decided on an old view of the quarantine (a
    partition's former owner, still consuming while it moves): the command is to be
    parked in its turn, the fire left pending."""


CommitOutcome = Committed | Duplicate | Conflict | TimerGone | Ended | Fenced


@dataclass(frozen=True, slots=True)
class LoadedEntity:
    """An entity as stored: its latest snapshot (if any) and every event after it."""

    ref: Ref
    snapshot: Snapshot | None
    events: Sequence[RecordedEvent] = field(default_factory=tuple)
    ended: str | None = None
    """:data:`ENDED` or :data:`ERASED` once its life ended (an erased entity loads
    with nothing but this and ``stored_version``), None while it lives."""
    stored_version: int | None = None
    """The version its row holds, when ended (an erased entity has no events left)."""

    @property
    def version(self) -> int:
        if self.stored_version is not None:
            return self.stored_version
        if self.events:
            return self.events[-1].version
        return self.snapshot.version if self.snapshot else 0


@dataclass(frozen=True, slots=True)
class Erasure:
    """What erasing one entity deleted, row counts per table (never the data), and the
    version its tombstone keeps."""

    entity_id: uuid.UUID
    entity_type: str
    version: int
    events: int = 0
    snapshots: int = 0
    commands: int = 0
    timers: int = 0
    log_rows: int = 0
    effects: int = 0
    quarantined: int = 0  # quarantined and parked commands (kept whole), attempt counts
