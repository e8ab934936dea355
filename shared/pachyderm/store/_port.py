"""The event store port: what the runtime needs from a database."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from .._reference import Ref
from ._log_wakeups import LogWakeups
from ._records import (
    Change,
    CommitOutcome,
    Duplicate,
    Erasure,
    ListedEntity,
    LoadedEntity,
    LoggedEvent,
    OutboxEntry,
    RecordedEvent,
    StoredTimer,
)
from ._retention import Retained


class EventStore(Protocol):
    """Durable histories, snapshots, command ids and the effect outbox.

    Every backend passes the same contract suite
    (:class:`pachyderm.testing.EventStoreContract`).
    """

    async def migrate(self) -> int:
        """Bring the schema up to date; safe when several processes run it at once.

        Returns the schema version.
        """
        ...

    async def load(self, ref: Ref, *, use_snapshot: bool = True) -> LoadedEntity:
        """The latest snapshot of ``ref`` and the events after it.

        An entity with no history loads at version 0. An ended one loads with
        ``ended`` set (and its stored version, whether or not its history was
        pruned); an erased one with nothing but ``ended`` at version
        :data:`ERASED_VERSION`. Raises
        :class:`~pachyderm.EntityTypeMismatchError` when the id belongs to another type.
        """
        ...

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        """Commit a batch in one transaction; one outcome per change, in order.

        Changes to one entity apply in the order given, each seeing the ones
        before it. A stale change (:class:`Conflict`) or an already committed
        command id (:class:`Duplicate`) writes nothing, while the rest commit;
        the entity's later changes in the batch are then refused as conflicts,
        since they were computed on top of the refused one. A change that fires
        a timer (``Change.fires``) commits only if that timer is still pending as
        fired and due by the store's clock, else it is refused as
        :class:`TimerGone`; a committed change's timer writes apply in order.
        A committed change's events join the log of its ``partition``.
        A change to an ended or erased entity writes nothing (:class:`Ended`),
        unless its command id is recorded (:class:`Duplicate`); a committed change
        with ``ends`` ends its entity and deletes its pending timers. A change that
        writes nothing but its reply to an entity that has no row, when every change
        of the batch to that entity is such, creates no entity: it commits at
        version 0 recording only its command id and reply. A change to an entity parked
        behind a quarantined command writes nothing (:class:`Fenced`), whatever else
        would become of it, unless it runs that command, resumed, or one parked behind
        it; the entity's later changes in the batch are fenced too.
        Raises :class:`~pachyderm.StoreError` when the transaction fails as a
        whole; then nothing of the batch was written.
        """
        ...

    async def recorded(
        self, commands: Sequence[tuple[uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, str], Duplicate]:
        """The stored replies of those ``(entity id, command id)`` pairs already committed."""
        ...

    async def versions(self, entity_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The current version of each entity that has one (new entities are absent;
        erased ones are at :data:`ERASED_VERSION`)."""
        ...

    async def history(
        self, entity_id: uuid.UUID, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Events of one entity from ``from_version`` on, oldest first."""
        ...

    async def list_entities(
        self,
        entity_type: str,
        *,
        after: uuid.UUID | tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
        by_change: bool = False,
    ) -> list[ListedEntity]:
        """The written entities (version 1 or more) of ``entity_type``, at most ``limit``:
        by id, after the id ``after``; or ``by_change``, by last change then id, after
        ``(updated_at, id)``. The cursor (:meth:`ListedEntity.cursor`) is a keyset, not
        an offset: entities added meanwhile never shift a page, so none is missed or
        repeated, save that an entity that changes while listed by change moves on."""
        ...

    async def read_log(self, partition: int, after: int, limit: int) -> list[LoggedEvent]:
        """The events of the log of ``partition`` after position ``after``, in order, at
        most ``limit``. Positions are gap-free and in commit order: a reader that has
        read up to ``n`` has missed nothing before ``n``, ever. Events deleted since
        (:meth:`erase`, :meth:`prune_ended`) are skipped: their positions stay given."""
        ...

    async def log_heads(self) -> dict[int, int]:
        """The last position of each partition's log that has one."""
        ...

    def log_wakeups(self) -> LogWakeups:
        """Wake-ups when a partition's log grows, for readers that would otherwise poll
        (a hint: they read the log whatever it says). Called in a running event loop;
        closed with the store."""
        ...

    async def pending_effects(self, limit: int = 100, older_than: float = 0.0) -> list[OutboxEntry]:
        """Effects not yet marked published and due for a try, oldest first.

        ``older_than`` (seconds) skips effects written more recently, which
        the worker that committed them is most likely publishing right now.
        Effects postponed by :meth:`postpone_effects` are skipped until their
        time comes, so those behind them are reached meanwhile.
        """
        ...

    async def mark_published(self, effect_ids: Sequence[uuid.UUID]) -> None:
        """Record that these effects reached the broker."""
        ...

    async def postpone_effects(self, delays: Mapping[uuid.UUID, float]) -> None:
        """Record a failed publish of each effect: one more attempt, and no new try
        for ``delays[effect_id]`` seconds. Published or unknown ids are ignored."""
        ...

    async def due_timers(
        self, partition: int, until: datetime, limit: int, *, skip: Collection[uuid.UUID] = ()
    ) -> list[StoredTimer]:
        """The pending timers of ``partition`` whose next try is at ``until`` or
        earlier, soonest first, at most ``limit``; none of the entities in ``skip``
        (parked ones, whose timers wait: however many they are, they do not fill the
        batch and keep the others from being read)."""
        ...

    async def entity_timers(self, entity_id: uuid.UUID) -> list[StoredTimer]:
        """The pending timers of one entity, soonest first."""
        ...

    async def postpone_timers(
        self, delays: Mapping[tuple[uuid.UUID, str], float]
    ) -> dict[tuple[uuid.UUID, str], int]:
        """Record a try of each ``(entity id, key)`` timer: one more attempt, and no new
        try for ``delays[...]`` seconds (its due time stays); the pending ones' attempts
        now."""
        ...

    async def hold_timers(self, keys: Sequence[tuple[uuid.UUID, str]]) -> None:
        """Hold each ``(entity id, key)`` timer until released (:meth:`release_timer`):
        no try for a century; its attempts and due time stay."""
        ...

    async def release_timer(self, entity_id: uuid.UUID, key: str) -> bool:
        """Let a timer held after its attempts fire again: its attempts start over, its
        next try is its due time; whether it is pending."""
        ...

    async def count_timers(self) -> int:
        """How many timers are pending in all (a backend may estimate a large number)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def prune(self, retained: Retained, older_than: float, limit: int) -> int:
        """Delete at most ``limit`` of the oldest ``retained`` rows stored more than
        ``older_than`` seconds ago by the store's clock: ``"commands"``, command ids
        with their stored replies; ``"effects"``, outbox rows already published
        (never one still pending). One short transaction that waits for no commit
        and skips rows another pruner holds; returns how many rows went."""
        ...

    async def count_prunable(self, retained: Retained, older_than: float) -> int:
        """How many ``retained`` rows :meth:`prune` would delete now, in all batches."""
        ...

    async def erase(self, ref: Ref) -> Erasure:
        """Delete everything stored of ``ref`` (events, snapshot, command ids with their
        replies, pending timers, log rows, published effects) and leave a tombstone:
        its row, marked erased, at the version it had (0 if it had none), which refuses
        every later change. One transaction; erasing again deletes nothing more.
        Raises :class:`~pachyderm.EntityTypeMismatchError` when the id is of another type."""
        ...

    async def prune_ended(self, limit: int) -> int:
        """Delete at most ``limit`` events of ended entities at or before their final
        snapshot, which stays; returns how many went. Short, skips rows others hold."""
        ...

    async def count_prunable_ended(self) -> int:
        """How many events :meth:`prune_ended` would delete now, in all batches."""
        ...
