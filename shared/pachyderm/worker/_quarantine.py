"""Poison commands: count their attempts, quarantine them, park their entities, release.

A command that crashes, hangs (see :mod:`._watchdog`) or kills its worker is
never answered, so the broker delivers it again, marked *redelivered*. Only
such deliveries are counted: a healthy fleet pays nothing. With ``isolation``
(the default where the platform forks), a batch holding them is decided in a
forked child first (:mod:`._isolation`) and runs beside the worker's other
batches and its own partition's (:mod:`._suspect_runs`: only its entities' later
deliveries wait for it); an attempt is counted when its child dies or overruns
(:class:`HandlerDiedError`), and the batch and those that waited for it are admitted
again, so the worker survives every attempt but a poison's first, and even that
one if it hangs in Python code (the watchdog interrupts it: :mod:`._interruption`;
the batch is then admitted again as if redelivered). Without it,
they are counted (one statement per batch that has any) just before the batch
is decided, so that an attempt that takes the worker down is on record before
the handler runs again, and the batch runs alone (:class:`Turns`). A delivery whose
command has been redelivered ``max_attempts`` times without an answer (and has
not applied meanwhile) is quarantined instead of run: kept whole in the
database, answered ``quarantined`` (:class:`~pachyderm.CommandQuarantinedError`),
acknowledged, logged and counted (``pachyderm.quarantined``).

While a batch holds a delivery that may be a poison's (redelivered, or a
stored command run again), the first deliveries of the *other* entities in it
go first, in a batch of their own: nothing of theirs is counted, and they
commit before the risky ones run, so a poison that takes the worker down again
takes none of them along (they are not redelivered, counted and suspected with
it). An entity's own deliveries keep their order behind its risky one. The risky
ones run in batches of at most 16, so a poison among them makes suspects of its
batch only (each then decided alone). Decided in forked children, a poison's
child that dies or hangs names the command it died deciding (see :mod:`._isolation`):
only that command is counted and becomes a suspect; the others go again as they
were, its entity's too (those before it were decided, those after it not reached),
so a healthy command is never counted for a poison beside it, nor quarantined in
its name. And while a batch has few entities with risky deliveries (a poison's
redelivery, up to :data:`_BY_ENTITY`), each entity's go in one child of their own,
however many (a hot entity's redelivered backlog costs one fork), so that a hanging
poison holds up no other entity for the budget; past that (a loaded worker died:
hundreds of entities redelivered at once), in batches of 16, so that the fork per
child does not multiply.

Policies (``PACHYDERM_QUARANTINE_POLICY``):

* ``park`` (default): the entity waits. Its later commands are stored aside
  (``parked_commands``, in arrival order) and acknowledged, rather than held
  unacknowledged: held, they would fill the partition's prefetch window and
  stall the other entities, and be lost to ordering when handed over. Nothing
  is lost (stored before acknowledged) and per-entity order holds: while the
  entity is parked every one of its commands goes behind the parked ones, and
  releasing runs them in order, under the partition's lock, before any newer
  delivery of the entity is admitted. Its timers wait too (:meth:`parked`, read
  by the partition's timer firing).
* ``skip``: the command is set aside; the entity's later commands run.

Operators decide (``pachyderm quarantine resume|skip``, the gateway's admin
routes): the decision is a row update; the partition's owner sees it within
``poll`` seconds and carries it out: *resume* runs the command again (its
attempts start over), then the parked commands; *skip* releases the parked
commands and leaves the command ``skipped`` (a copy of it is answered
``quarantined``). The entity stays parked until its parked commands are all
run, so a crash while releasing resumes the release on the next owner (a
command that applied already gets its stored reply, as any repeated one).
Because all of it lives in the database, restarts and new owners respect it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol

from .._errors import CommandQuarantinedError, DefinitionError, StoreError
from .._hooks import WorkerHooks
from .._reference import Ref
from .._stored_messages import decode_message, encode_message
from .._wire import ENTITY_TYPE_HEADER, KIND_HEADER, QUERY, error_reply
from ..store import EventStore, Parked, Quarantined, QuarantineStore
from ..store._quarantine import CommandKey, Policy
from ..transport import Delivery, Inbox, Transport
from . import _repeats
from ._isolation import HandlerDiedError, can_isolate
from ._suspect_runs import SuspectRun, SuspectRuns, entity_of
from ._turns import EntityTurns

log = logging.getLogger("pachyderm.quarantine")

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_ISOLATION = 30.0  # seconds, as the handler budget's default
_STORE_RETRY = 0.5  # seconds before a suspect batch whose commit failed goes again
_BLOCKING = ("quarantined", "resuming", "skipping")
_REMEMBERED = 10_000  # settled tags kept, for admit() called again after a store failure
_REFUSED = ("quarantined", "skipping", "skipped")
# Redelivered commands run in batches of at most this many, unless each entity's go in a
# child of their own (see _BY_ENTITY): a poison among them that takes the worker down again
# (or its child, unnamed) counts an attempt against its batch only, so at most this many
# healthy commands become suspects (run one at a time) with it.
_CHUNK = 16
# Entities with risky deliveries in one batch up to which each entity's are decided in
# children of their own (a fork costs the worker about 2 to 6 ms of CPU, by its size).
_BY_ENTITY = 32
# Synthetic deliveries (stored commands run again) have tags below zero, which no
# broker hands out: settling them is the quarantine's business, not the inbox's.
_synthetic_tags = itertools.count(-1, -1)


Apply = Callable[[Sequence[Delivery], "float | None"], Awaitable[Sequence[Delivery]]]
"""Applies a batch; the float: decide it in a forked child first, for at most that long
(:class:`HandlerDiedError` if the child dies), None: in process. Returns the deliveries
the store fenced (their entities parked by another worker), left unsettled."""


class Serialized(Protocol):
    """The partition the quarantine serves, as it needs it."""

    async def exclusively(self, work: Callable[[], Awaitable[None]]) -> bool:
        """Run ``work`` while no batch is applied; False (not run) once stopping."""
        ...

    async def apply(self, deliveries: Sequence[Delivery]) -> None:
        """Apply ``deliveries`` as a batch (the caller holds the partition)."""
        ...


class Turns:
    """How a worker's batches take turns, without isolation: one with counted attempts
    runs alone, after the batches in flight end and before any other starts; the
    others run together.

    Alone, because whatever takes the worker down while it runs must be its own
    doing: a poison's first delivery (never counted) in an uncounted batch beside it
    would otherwise count an attempt against every command of it, and a healthy
    command unlucky enough to be beside a poison three times would be quarantined."""

    def __init__(self) -> None:
        self._running = 0  # uncounted batches in flight
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()  # no counted batch waits or runs
        self._open.set()
        self._counted = asyncio.Lock()

    @asynccontextmanager
    async def together(self) -> AsyncIterator[None]:
        """Around an uncounted batch (the healthy path: two integer updates)."""
        while not self._open.is_set():
            await self._open.wait()
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    @asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        """Around a batch with counted attempts."""
        async with self._counted:
            self._open.clear()
            try:
                while self._running:
                    await self._idle.wait()
                yield
            finally:
                self._open.set()


@dataclass(frozen=True, slots=True)
class QuarantineOptions:
    """``max_attempts``: deliveries of a command without an answer before it is
    quarantined; ``policy``: park or skip; ``poll``: seconds between two reads of the
    partition's quarantine (how soon an operator's decision is carried out)."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    policy: Policy = "park"
    poll: float = 1.0
    isolation: float | None = DEFAULT_ISOLATION
    """Seconds a batch with redelivered commands may take to decide in a forked child
    (see :mod:`._isolation`); None: such a batch is decided in the worker's process,
    alone (where forking is not available, too)."""
    turns: Turns = field(default_factory=Turns, compare=False, repr=False)
    """How the worker's batches take turns (its partitions share it)."""
    entity_turns: EntityTurns = field(default_factory=EntityTurns, compare=False, repr=False)
    """Which entities the worker's runs hold (its partitions share it: an entity that two
    of its partitions serve, as after a broker restart moved it (docs/scaling.md, "The
    hash ring across a restart"), is decided by one run at a time all the same)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"a command has at least 1 attempt, not {self.max_attempts}")


@dataclass(slots=True)
class _View:
    """The partition's quarantine as last read (and as this worker changed it since)."""

    blocked: dict[uuid.UUID, set[str]] = field(default_factory=dict)  # parked entities
    refused: dict[CommandKey, int] = field(default_factory=dict)  # command -> attempts

    @classmethod
    def of(cls, rows: Sequence[Quarantined]) -> _View:
        view = cls()
        for row in rows:
            view.add(row)
        return view

    def add(self, row: Quarantined) -> None:
        key = (row.entity_id, row.command_id)
        if row.policy == "park" and (row.status in _BLOCKING or _stranded(row)):
            self.blocked.setdefault(row.entity_id, set()).add(row.command_id)
        if row.status in _REFUSED:
            self.refused[key] = row.attempts


def _stranded(row: Quarantined) -> bool:
    """Commands parked behind a command already skipped: a former owner of the
    partition, still consuming while it moved (its view still parked the entity),
    parked them after the new owner released the entity. Released as a skip's are,
    in order, and the entity waits for them as it waited for the skip."""
    return row.status == "skipped" and row.parked > 0


def _key(delivery: Delivery) -> CommandKey | None:
    message = delivery.message
    if not message.message_id or message.headers.get(KIND_HEADER) == QUERY:
        return None  # a query (it reads, even a parked entity) or a command without id
    try:
        return uuid.UUID(message.routing_key), message.message_id
    except ValueError:
        return None  # bad input: parsing answers it, it cannot poison anything


def _fired_as(entry: Quarantined) -> Ref | None:
    """The entity ``entry`` parks, as its timers' fires hold it; None if the command's type
    header names no entity type (a publisher's mistake): no timer of it can fire."""
    try:
        return Ref(entry.entity_type, entry.entity_id)
    except DefinitionError:
        return None


def _after(batches: Sequence[Sequence[Delivery]], index: int) -> list[Delivery]:
    """The deliveries of the batches after ``index``, in order (to be admitted again)."""
    return [delivery for rest in batches[index + 1 :] for delivery in rest]


def _blamed(died: HandlerDiedError, delivery: Delivery) -> bool:
    """Whether ``delivery``'s command may be what killed or hung the child (the command
    the child names, else any of the entity it names, else any)."""
    return died.blames(entity_of(delivery), delivery.message.message_id or None)


def _tried(delivery: Delivery) -> Delivery:
    """``delivery`` as the broker would hand it out again after its attempt: redelivered
    (so that it is counted from now on, its first attempt standing for the broker's
    first delivery, which is never counted)."""
    return delivery if delivery.redelivered else replace(delivery, redelivered=True)


def _quarantined_error(key: CommandKey, attempts: int) -> CommandQuarantinedError:
    return CommandQuarantinedError(
        f"command {key[1]!r} of entity {key[0]} is quarantined after {attempts} attempts"
        " without an answer; an operator may resume or skip it",
        attempts=attempts,
    )


@dataclass(slots=True)
class _Admission:
    """What :meth:`PartitionQuarantine.admit` decided for one batch."""

    batches: list[list[Delivery]] = field(default_factory=list)
    parked: list[tuple[Delivery, CommandKey]] = field(default_factory=list)
    refused: list[tuple[Delivery, CommandKey, int]] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    last_alone: bool = False
    # Isolated: each entity's deliveries in batches of their own (see _by_entity).
    by_entity: bool = False
    _joinable: dict[uuid.UUID, list[Delivery]] = field(default_factory=dict)

    def admit(self, delivery: Delivery, *, alone: bool = False) -> None:
        """Apply ``delivery`` after those admitted before (in a batch of its own if
        ``alone``; ``by_entity``, with its entity's others however many; else in batches
        of at most :data:`_CHUNK`): the order of the deliveries is kept, and with it each
        entity's."""
        if self.by_entity:
            self._by_entity(delivery, alone)
        elif alone or self.last_alone or not self.batches or len(self.batches[-1]) >= _CHUNK:
            self.batches.append([delivery])
        else:
            self.batches[-1].append(delivery)
        self.last_alone = alone

    def _by_entity(self, delivery: Delivery, alone: bool) -> None:
        """Apply ``delivery`` after its entity's earlier deliveries, in a batch of that
        entity only: each entity's order is kept, not the order between entities (their
        batches run beside each other). One addressed to no entity (a repartition fence)
        keeps its place: nothing after it joins a batch before it."""
        entity = entity_of(delivery)
        batch = None if alone or entity is None else self._joinable.get(entity)
        # However many: a child that dies names the command it died deciding, so the
        # entity's others decided beside it are not counted (no cap: one fork per entity).
        if batch is None:
            batch = [delivery]
            self.batches.append(batch)
        else:
            batch.append(delivery)
        if entity is None:
            self._joinable.clear()
        elif alone:
            self._joinable.pop(entity, None)
        else:
            self._joinable[entity] = batch


class PartitionQuarantine:
    """One partition's inbox, seen through its quarantine (an :class:`Inbox` itself:
    settling a stored command run again is this class's, the rest goes to the inbox)."""

    def __init__(
        self,
        inbox: Inbox,
        quarantine: QuarantineStore,
        store: EventStore,
        transport: Transport,
        options: QuarantineOptions | None = None,
        *,
        hooks: WorkerHooks | None = None,
    ) -> None:
        self.inbox = inbox
        self.partition = inbox.partition
        self.quarantine = quarantine
        self.store = store
        self.transport = transport
        self.options = options or QuarantineOptions()
        self.hooks = hooks or WorkerHooks()
        self._view = _View()
        self._counted: dict[int, CommandKey] = {}  # delivery tag -> its counted attempts
        self._stored: dict[int, int | None] = {}  # synthetic tag -> parked position
        self._requarantined: set[CommandKey] = set()
        self._suspects: set[int] = set()  # tags of deliveries to run alone (once)
        self._uncounted: set[int] = set()  # tags whose attempt is counted when it starts
        self._done: dict[int, None] = {}  # tags settled lately (an ordered set)
        self._task: asyncio.Task[None] | None = None
        self._loaded = False
        self._leaving = False
        self._read = asyncio.Event()  # the view was read once (see :meth:`read`)
        self._outdated = asyncio.Event()  # read it again now (see :meth:`outdated`)
        # The entity turns (its PartitionWorker runs with them; the worker's partitions
        # share them): a quarantine that parks an entity is recorded while none of its
        # timers' fires is in flight.
        self.turns = self.options.entity_turns
        self.runs = SuspectRuns()  # suspect batches decided beside the partition

    # -- the inbox -------------------------------------------------------------

    async def take(self, max_count: int) -> list[Delivery]:
        return await self.inbox.take(max_count)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self._settle(deliveries, self.inbox.ack)

    async def dead_letter(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            if delivery.tag < 0:  # no queue to dead-letter it to: its failure is logged
                log.warning("stored command %s failed again", delivery.message.message_id)
        await self._settle(deliveries, self.inbox.dead_letter)

    async def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Hand back those from the broker (a stored command stays stored, to run again
        on release); they come again under other tags, so what was noted under these
        goes (an attempt counted stays counted: it is one)."""
        for delivery in deliveries:
            self._counted.pop(delivery.tag, None)
        await self.inbox.requeue([d for d in deliveries if d.tag >= 0])

    async def close(self) -> None:
        await self.inbox.close()

    async def _settle(
        self,
        deliveries: Sequence[Delivery],
        settle: Callable[[Sequence[Delivery]], Awaitable[None]],
    ) -> None:
        await settle([d for d in deliveries if d.tag >= 0])
        self._done.update(dict.fromkeys(d.tag for d in deliveries))
        while len(self._done) > _REMEMBERED:
            del self._done[next(iter(self._done))]
        answered = [key for d in deliveries if (key := self._counted.pop(d.tag, None))]
        positions = [p for d in deliveries if (p := self._stored.pop(d.tag, None)) is not None]
        try:
            await self.quarantine.unpark(positions)
            # Answered at last: their attempts no longer count.
            await self.quarantine.forget_attempts(answered)
        except StoreError as error:
            # Settled already, so not raised (that would apply the batch again); a
            # parked command left behind runs again on release and gets its stored reply.
            log.warning("partition %d: tidying the quarantine failed: %s", self.partition, error)

    # -- admission -------------------------------------------------------------

    async def admit(self, deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
        """The deliveries to decide now, as the batches to apply them in, in order; the
        others are parked or answered ``quarantined`` here (stored before they are
        acknowledged). The first deliveries of entities with nothing redelivered in
        the batch come first (see the module's note). A suspect (a command
        redelivered after an attempt that was counted and never answered) goes in
        a batch of its own, applied inside :meth:`attempt`. Called under the
        partition's lock; safe to call again for the same deliveries (a retry after a
        store failure): those settled are left out."""
        deliveries = [d for d in deliveries if d.tag not in self._done and not self.runs.aside(d)]
        if not self._loaded and any(d.tag >= 0 for d in deliveries):
            # The partition's first deliveries from the broker: this worker has just
            # become its consumer (it may have owned it a while, waiting for the former
            # owner to let go, with a view read meanwhile): read what that owner
            # quarantined and parked until it let go.
            await self._reload()
            self._loaded = True
        candidates = [
            (delivery, key)
            for delivery in deliveries
            # Redelivered first: a healthy batch costs one attribute read per delivery.
            if (delivery.redelivered or delivery.tag < 0)
            and (key := _key(delivery)) is not None
            and key not in self._view.refused
        ]
        if not candidates and not self._view.blocked and not self._view.refused:
            return [deliveries] if deliveries else []  # the healthy path: no statement
        counts = await self.quarantine.attempts([key for _, key in candidates])
        # A command that applied and was answered, but not acknowledged before its
        # worker died, is a repeat: its stored reply answers it (see ._repeats).
        recorded = await self.store.recorded([key for _, key in candidates])
        repeated = [(d, key) for d, key in candidates if d.tag >= 0 and key in recorded]
        if repeated:
            await self._answer_repeats(
                [(d, recorded[key]) for d, key in repeated],
                {d.tag: key for d, key in repeated if key in counts},
            )
            answered = {d.tag for d, _ in repeated}
            deliveries = [d for d in deliveries if d.tag not in answered]
            candidates = [(d, key) for d, key in candidates if d.tag not in answered]
        # Attempts made: those counted, and a broker's first delivery, which is not.
        made = {d.tag: counts.get(key, 0) + (d.tag >= 0) for d, key in candidates}
        exhausted = {
            key
            for d, key in candidates
            if made[d.tag] >= self.options.max_attempts and key not in recorded
        }
        admission = self._admission(deliveries, made, exhausted)
        # Counted in attempt(), just before they run, a batch's at once.
        admitted = {d.tag for batch in admission.batches for d in batch}
        for delivery, key in candidates:
            self._counted[delivery.tag] = key
            if delivery.tag in admitted:
                self._uncounted.add(delivery.tag)
        await self._record(admission)
        return admission.batches

    async def _answer_repeats(
        self, repeats: Sequence[_repeats.Repeat], counted: dict[int, CommandKey]
    ) -> None:
        """Answer and acknowledge redelivered commands that applied before; settling
        them forgets the attempts counted for them (``counted``, by delivery tag: a
        worker died deciding their batch after it committed), as for any answered."""
        await _repeats.answer(repeats, self.transport, self.hooks, self.partition)
        self._counted.update(counted)
        await self._settle([delivery for delivery, _ in repeats], self.inbox.ack)

    async def handle(
        self, deliveries: Sequence[Delivery], apply: Apply, partition: Serialized
    ) -> None:
        """Admit ``deliveries``, then apply the batches in order, each inside
        :meth:`attempt`. A batch decided in a forked child runs beside the partition
        (:mod:`._suspect_runs`): only its entities' later deliveries wait for it. When a
        batch's child dies (:class:`HandlerDiedError`: its attempt is counted), that batch
        and all after it that waited for it are admitted again, as if redelivered: each
        entity's order holds, and the dead batch's commands are suspects now, decided one
        by one until the poison among them is quarantined. The worker lives on."""
        pending: Sequence[Delivery] = deliveries
        while pending and not self._leaving:  # left unsettled: handed back
            batches = await self.admit(pending)
            pending = []
            for index, admitted in enumerate(batches):
                if not (batch := self.runs.free(admitted)):
                    continue
                if (limit := self._isolating(batch)) is not None and min(d.tag for d in batch) >= 0:
                    self.runs.start(batch, partial(self._beside, apply, partition, limit))
                    continue
                try:
                    async with self.attempt(batch) as isolate:
                        fenced = await apply(batch, isolate)
                except HandlerDiedError as died:
                    log.warning("partition %d: %s", self.partition, died)
                    # The one that hung is among them (the command named, if any): each
                    # goes alone next, not in a batch of first deliveries again (whose
                    # child would hang as well).
                    self._suspects.update(d.tag for d in batch if _blamed(died, d))
                    pending = [_tried(delivery) for delivery in batch] + _after(batches, index)
                    break
                if fenced:
                    pending = [*await self._fenced(fenced), *_after(batches, index)]
                    break

    async def _beside(
        self, apply: Apply, partition: Serialized, limit: float, run: SuspectRun
    ) -> None:
        """Decide ``run``'s batch in a child, then, under the partition's lock, handle
        what must go again and what waited for it (see :mod:`._suspect_runs`)."""
        again: list[Delivery] = []
        fenced: Sequence[Delivery] = ()
        try:
            async with self._isolated(run.batch, limit):
                fenced = await apply(run.batch, limit)
        except HandlerDiedError as died:
            log.warning("partition %d: %s", self.partition, died)
            again = [_tried(delivery) for delivery in run.batch]
        except StoreError as error:
            log.warning("partition %d: store failed, retrying: %s", self.partition, error)
            await asyncio.sleep(_STORE_RETRY)
            again = list(run.batch)
        except Exception:  # as a batch of the partition's own (PartitionWorker._run)
            log.exception("partition %d: settling a batch failed", self.partition)

        async def wind_up() -> None:
            waited = self.runs.finish(run)
            ahead = [*again, *fenced]
            try:
                if fenced:
                    with contextlib.suppress(StoreError):  # else fenced again, then read
                        ahead = [*again, *await self._fenced(fenced)]
                await partition.apply([*ahead, *waited])
            except Exception:  # as a batch of the partition's own (PartitionWorker._run)
                # What was not acknowledged comes back (or goes to the next owner).
                log.exception("partition %d: settling a batch failed", self.partition)

        await partition.exclusively(wind_up)

    def _isolating(self, batch: Sequence[Delivery]) -> float | None:
        """How long ``batch`` may take in a forked child; None: it is decided in process."""
        if not any(d.tag in self._counted for d in batch) or not can_isolate():
            return None
        return self.options.isolation

    async def _fenced(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """The store fenced ``deliveries``: another worker parked their entities after this
        one last read the quarantine. Read it again, with those entities parked even if
        the rows that park them are filed under another partition (they will be released
        from there), and admit the deliveries again: parked now, in order. Stored
        commands run again are not parked again (their rows stay for the next release)."""
        log.info("partition %d: %d fenced: reading the quarantine", self.partition, len(deliveries))
        await self._reload()
        for delivery in deliveries:
            if (entity := entity_of(delivery)) is not None:
                self._view.blocked.setdefault(entity, set())
        return [delivery for delivery in deliveries if delivery.tag >= 0]

    @asynccontextmanager
    async def attempt(self, batch: Sequence[Delivery]) -> AsyncIterator[float | None]:
        """Around applying one of :meth:`admit`'s batches; yields how to decide it: in a
        forked child first, for at most that many seconds, or (None) in process.

        A batch with redelivered or stored commands in it is decided in a child (see
        :mod:`._isolation`) if ``isolation`` allows: nothing it does can take the worker
        down, so it runs beside the other batches and an attempt is counted only once
        its child died (:class:`HandlerDiedError`), never in vain. Without isolation it runs
        while no other batch of the worker does (see :class:`Turns`), so that the one
        that takes the worker down is the only one whose attempt was counted in vain;
        their attempts are counted just before. Either way, an attempt the worker
        survives, however it ended (answered, left unsettled for a newer worker, or
        failed on the store), is not a poison's: its count goes."""
        if not any(d.tag in self._counted for d in batch):
            async with self.options.turns.together():
                yield None  # the healthy path: first deliveries, nothing to count
            return
        if (isolation := self._isolating(batch)) is not None:
            async with self._isolated(batch, isolation) as limit:
                yield limit
            return
        async with self.options.turns.alone():
            # Counted now, not when admitted: an attempt waiting here while another
            # takes the worker down has not started, and does not count.
            starting = [self._counted[d.tag] for d in batch if d.tag in self._uncounted]
            await self.quarantine.count_attempts(starting)
            for delivery in batch:
                self._uncounted.discard(delivery.tag)
                self._suspects.discard(delivery.tag)
            try:
                yield None
            except HandlerDiedError:  # interrupted (see ._interruption): its count stands
                for delivery in batch:
                    self._counted.pop(delivery.tag, None)
                raise
            except Exception:
                await self._survived(batch)
                raise
            await self._survived(batch)

    @asynccontextmanager
    async def _isolated(self, batch: Sequence[Delivery], limit: float) -> AsyncIterator[float]:
        """Around a batch decided in a child first: its attempts are counted if it dies."""
        for delivery in batch:
            self._uncounted.discard(delivery.tag)
            self._suspects.discard(delivery.tag)
        # Beside the others; its child waits for one of the worker's slots (see
        # :class:`~._isolation.Children`), the rest of it for nothing.
        async with self.options.turns.together():
            try:
                yield limit
            except HandlerDiedError as error:
                # Only the command it died deciding, if named: the others are no suspects.
                died = [
                    key
                    for d in batch
                    if (key := self._counted.pop(d.tag, None)) and _blamed(error, d)
                ]
                await self.quarantine.count_attempts(died)
                raise
            except Exception:
                await self._survived(batch)
                raise
            await self._survived(batch)

    async def _survived(self, batch: Sequence[Delivery]) -> None:
        survived = [key for d in batch if (key := self._counted.pop(d.tag, None))]
        try:
            await self.quarantine.forget_attempts(survived)
        except StoreError as error:  # then counted once in vain: not worth failing for
            log.warning("partition %d: forgetting attempts failed: %s", self.partition, error)

    def _admission(
        self,
        deliveries: Sequence[Delivery],
        made: dict[int, int],
        exhausted: set[CommandKey],
    ) -> _Admission:
        blocked_now: set[uuid.UUID] = set()  # parked by this very batch
        # Entities with a delivery that may be a poison's: theirs keep their order, after
        # the first deliveries of all the others (``first``), which go ahead together.
        risky = {entity_of(d) for d in deliveries if d.tag in made}
        isolating = self.options.isolation is not None and can_isolate()
        admission = _Admission(by_entity=isolating and len(risky) <= _BY_ENTITY)
        first: list[Delivery] = []
        for delivery in deliveries:
            key = _key(delivery)
            if risky and self._healthy(delivery, key, made, risky):
                first.append(delivery)  # ahead of the risky ones
                continue
            if key is None:
                admission.admit(delivery)
                continue
            entity_id = key[0]
            synthetic = delivery.tag < 0
            if key in self._view.refused:
                # A stored one too: a copy of a refused command parked where the view
                # did not refuse it yet. Run, it would go uncounted (a refused key is
                # no candidate), in the worker's own process.
                admission.refused.append((delivery, key, self._view.refused[key]))
            elif entity_id in blocked_now or (entity_id in self._view.blocked and not synthetic):
                admission.parked.append((delivery, key))
            elif key in exhausted:
                entry = self._entry(delivery, key, made[delivery.tag])
                admission.quarantined.append(entry)
                admission.refused.append((delivery, key, entry.attempts))
                self._view.add(entry)
                if entry.policy == "park":
                    blocked_now.add(entity_id)
            elif made.get(delivery.tag, 0) - (delivery.tag >= 0) > 0 or (
                delivery.tag in self._suspects
            ):
                # An attempt of it was counted and never answered, or its batch was just
                # interrupted: it may be the poison.
                self._suspects.add(delivery.tag)
                admission.admit(delivery, alone=True)
            else:
                admission.admit(delivery)
        if first:
            admission.batches.insert(0, first)
        return admission

    def _healthy(
        self,
        delivery: Delivery,
        key: CommandKey | None,
        made: dict[int, int],
        risky: set[uuid.UUID | None],
    ) -> bool:
        """A first delivery to an entity with nothing risky in the batch, neither
        refused nor parked: nothing to set aside, nothing to count. One addressed to no
        entity keeps its place: a fence of ``pachyderm repartition`` says that all
        before it is settled (see :mod:`pachyderm._repartition`)."""
        entity = entity_of(delivery)
        if delivery.tag in made or entity is None or entity in risky:
            return False
        return key is None or not (key in self._view.refused or key[0] in self._view.blocked)

    def _entry(self, delivery: Delivery, key: CommandKey, attempts: int) -> Quarantined:
        entity_type = delivery.message.headers.get(ENTITY_TYPE_HEADER)
        return Quarantined(
            key[0],
            key[1],
            entity_type if isinstance(entity_type, str) else "",
            self.partition,
            self.options.policy,
            "quarantined",
            attempts,
            f"{attempts} deliveries without an answer: its handler crashed, hung or"
            " killed the worker each time",
            encode_message(delivery.message),
        )

    async def _record(self, admission: _Admission) -> None:
        """Store what was set aside, then answer and acknowledge it. An entity parked now
        is parked in the store once no fire of its timers is in flight (the view parks
        it already, so none starts meanwhile): a fire decided before never commits
        after the quarantine."""
        parking = [_fired_as(e) for e in admission.quarantined if e.policy == "park"]
        async with self.turns.holding(ref for ref in parking if ref is not None):
            await self.quarantine.quarantine(admission.quarantined)
        await self.quarantine.park(
            [
                Parked(key[0], key[1], encode_message(delivery.message))
                for delivery, key in admission.parked
            ]
        )
        for entry in admission.quarantined:
            self._announce(entry)
        replies = [
            error_reply(delivery.message, _quarantined_error(key, attempts))
            for delivery, key, attempts in admission.refused
            if delivery.message.reply_to
        ]
        await self.transport.publish_replies(replies)
        settled = [d for d, *_ in admission.refused] + [d for d, _ in admission.parked]
        # A stored command parked again (behind one quarantined just now) keeps its row.
        for delivery, _ in admission.parked:
            self._stored.pop(delivery.tag, None)
        await self._settle(settled, self.inbox.ack)
        for delivery, key, _ in admission.refused:
            if delivery.tag < 0:
                self._requarantined.add(key)

    def _announce(self, entry: Quarantined) -> None:
        log.warning(
            "quarantined command %s of %s %s after %d attempts (policy %s)",
            entry.command_id,
            entry.entity_type,
            entry.entity_id,
            entry.attempts,
            entry.policy,
            extra={
                "event": "command.quarantined",
                "entity_type": entry.entity_type,
                "entity_id": str(entry.entity_id),
                "command_id": entry.command_id,
                "attempts": entry.attempts,
                "policy": entry.policy,
                "partition": entry.partition,
            },
        )
        self.hooks.quarantined(entry.entity_type, entry.policy)

    # -- parked entities, for the partition's timers (see ._timers.Parking) ------------

    async def read(self) -> None:
        """Return once this worker has read the partition's quarantine."""
        await self._read.wait()

    def parked(self, entity_id: uuid.UUID) -> bool:
        """The entity waits for an operator, or for its parked commands to run."""
        return entity_id in self._view.blocked

    def parked_entities(self) -> frozenset[uuid.UUID]:
        """Every parked entity of the partition, as last read."""
        return frozenset(self._view.blocked)

    def outdated(self) -> None:
        """The store fenced a fire: another worker parked its entity. Read the quarantine
        again now rather than at the next poll (the fire is left pending meanwhile)."""
        self._outdated.set()

    # -- operators' decisions --------------------------------------------------

    def start(self, partition: Serialized) -> None:
        """Read the partition's quarantine every ``poll`` seconds, carrying out the
        operators' decisions through ``partition``."""
        self._task = asyncio.create_task(
            self._watch_forever(partition), name=f"quarantine-{self.partition}"
        )

    async def stop(self) -> None:
        # The partition is moving to another worker, which may consume it already:
        # what this one has not admitted yet goes back to the queue for it, rather
        # than quarantined or parked here on a view that worker did not read.
        self._leaving = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.runs.stop()

    async def _reload(self) -> list[Quarantined]:
        """Read the partition's quarantine (under the partition's lock: no batch is being
        admitted meanwhile); the rows waiting to be carried out."""
        rows = await self.quarantine.quarantined(partitions=[self.partition], limit=100_000)
        self._view = _View.of(rows)
        self._read.set()
        return [row for row in rows if row.status in ("resuming", "skipping") or _stranded(row)]

    async def _watch_forever(self, partition: Serialized) -> None:
        decided: list[Quarantined] = []

        async def reload() -> None:
            decided[:] = await self._reload()

        while True:
            try:
                if not await partition.exclusively(reload):
                    return
                for row in decided:
                    if not await self.carry_out(row, partition):
                        return
            except StoreError as error:
                log.warning(
                    "partition %d: reading the quarantine failed: %s", self.partition, error
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outdated.wait(), self.options.poll)
            self._outdated.clear()

    async def carry_out(self, row: Quarantined, partition: Serialized) -> bool:
        """Resume or skip ``row``'s command, then run its entity's parked commands in
        order (unless another of its commands is quarantined meanwhile), each step under
        the partition's lock. False: the partition is stopping (its next owner carries
        the decision out)."""
        key = (row.entity_id, row.command_id)
        self._requarantined.discard(key)
        if row.status == "resuming":  # its attempts started over with the decision
            command = [self._synthetic(row.message, None)]
            if not await partition.exclusively(lambda: partition.apply(command)):
                return False
            if key in self._requarantined:
                return True  # it failed again: quarantined again, the entity still parked
        finished = False

        async def step() -> None:
            nonlocal finished
            parked = (
                []
                if row.policy == "skip" or self._blocked_by_another(row)
                else (await self.quarantine.parked(row.entity_id, 256))
            )
            if parked:
                await partition.apply([self._synthetic(p.message, p.position) for p in parked])
                return
            # Settled under the lock: no command of the entity is parked in between.
            await self.quarantine.settle(*key)
            self._settled(row)
            finished = True

        while not finished:
            if not await partition.exclusively(step):
                return False
        return True

    def _settled(self, row: Quarantined) -> None:
        blocking = self._view.blocked.get(row.entity_id, set())
        blocking.discard(row.command_id)
        if not blocking:
            self._view.blocked.pop(row.entity_id, None)
        key = (row.entity_id, row.command_id)
        if row.status == "resuming":
            self._view.refused.pop(key, None)
        if row.status == "skipped":
            log.warning(
                "released the commands of %s %s parked behind command %s after it was skipped",
                row.entity_type,
                row.entity_id,
                row.command_id,
            )
            return
        log.info(
            "%s command %s of %s %s",
            "resumed" if row.status == "resuming" else "skipped",
            row.command_id,
            row.entity_type,
            row.entity_id,
            extra={
                "event": "command.resumed" if row.status == "resuming" else "command.skipped",
                "entity_id": str(row.entity_id),
                "command_id": row.command_id,
            },
        )

    def _blocked_by_another(self, row: Quarantined) -> bool:
        return bool(self._view.blocked.get(row.entity_id, set()) - {row.command_id})

    def _synthetic(self, message: bytes, position: int | None) -> Delivery:
        tag = next(_synthetic_tags)
        self._stored[tag] = position
        return Delivery(decode_message(message), self.partition, tag, redelivered=True)
