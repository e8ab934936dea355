"""Serve one partition queue: take a batch, apply it, reply, publish effects, ack; and
fire the partition's due timers beside the batches, not behind them.

A delivery for an entity whose history this code cannot read (an event a newer
worker wrote: :class:`NewerSchemaError`) is neither answered, acked nor
dead-lettered: it stays unsettled until the partition leaves this worker (as
it does during a rolling deploy), and the broker then gives it to the next
owner, which reads it. Its caller, if waiting, may time out meanwhile and retry
with the same command id, as after any timeout: the retry is held in its place.

Invariant: a delivery is answered only once every delivery ahead of it in the queue
to its entity is settled (committed, set aside or held), and a delivery naming no
entity only once every delivery ahead of it is: batches are applied one after
another and replies go out after the commit, except a suspect batch decided in a
forked child, which runs beside the partition with its entities' later deliveries
queued behind it (:mod:`._suspect_runs`). ``pachyderm repartition`` relies on it
(its fences, :mod:`pachyderm._repartition`): pipelining batches must keep it.

Fires do not take the partition's turn: a fire runs as soon as none of its
entities is being decided on (:class:`EntityTurns`), beside the batch in flight,
and its changes join whatever commit the worker's partitions share next; a timer
falling due on a busy partition waits for one commit, not for the batch ahead of
it and then the next. An entity is never in two runs at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from .._app import App
from .._cancellation import is_failure
from .._errors import (
    CommandExpiredError,
    EntityEndedError,
    HandlerError,
    InvalidInputError,
    NewerSchemaError,
    PachydermError,
    StoreError,
    TransportError,
)
from .._expiry import CommandWindow
from .._hooks import BatchHooks, WorkerHooks
from .._reference import Ref
from .._wire import COMMAND, Request, error_reply, ok_reply, parse_request, rejected_reply
from ..store import Change
from ..transport import Delivery, Inbox, Message, Transport
from ._engine import Done, Engine
from ._isolation import HandlerDiedError
from ._outbox import EffectPublisher
from ._quarantine import PartitionQuarantine
from ._timers import TimerFiring
from ._turns import EntityTurns

log = logging.getLogger("pachyderm.worker")

FAILED = "failed"
DEFERRED = "deferred"

DEFAULT_MAX_BATCH = 256
_STORE_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)


@dataclass(slots=True)
class _Decided:
    """A batch decided and committed: requests parsed, outcome by delivery, changes."""

    requests: list[tuple[int, Request]]
    outcomes: dict[int, Done | PachydermError]
    committed: list[Change]


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What to do with one delivery once its batch is applied."""

    delivery: Delivery
    reply: Message | None
    dead_letter: bool = False
    held: bool = False  # left unsettled for the partition's next owner
    fenced: bool = False  # its entity is parked: parked in turn, not answered


def _reply_for(message: Message, result: Done) -> Message:
    if result.error is not None:
        return error_reply(message, result.error)
    if result.rejection is not None:
        return rejected_reply(message, result.rejection)
    return ok_reply(message, result.version, result.reply)


def _verdict(delivery: Delivery, outcome: Done | PachydermError) -> _Verdict:
    """Reply when asked to; a failure nobody will hear of goes to the dead-letter queue."""
    message = delivery.message
    result = outcome if isinstance(outcome, Done) else Done(error=outcome)
    if result.fenced:
        return _Verdict(delivery, None, fenced=True)
    if isinstance(result.error, NewerSchemaError):
        return _Verdict(delivery, None, held=True)
    if message.reply_to:
        return _Verdict(delivery, _reply_for(message, result))
    if result.error is not None:
        log.warning("dead-lettering command %s: %s", message.message_id, result.error)
        return _Verdict(delivery, None, dead_letter=True)
    return _Verdict(delivery, None)


def _outcome_name(outcome: Done | PachydermError) -> str:
    error = outcome if isinstance(outcome, PachydermError) else outcome.error
    if isinstance(error, NewerSchemaError):
        return DEFERRED
    if isinstance(error, CommandExpiredError):
        return "expired"
    if isinstance(error, EntityEndedError):
        return error.status  # ended, erased
    if error is not None:
        return "invalid" if isinstance(error, InvalidInputError) else FAILED
    assert isinstance(outcome, Done)
    if outcome.fenced:
        return "fenced"
    if outcome.duplicate:
        return "duplicate"
    return "rejected" if outcome.rejection is not None else "ok"


def _report(
    batch: BatchHooks,
    requests: Sequence[tuple[int, Request]],
    outcomes: dict[int, Done | PachydermError],
) -> None:
    """Tell the batch's telemetry how each of its deliveries ended."""
    entity_types = {index: request.entity_type.name for index, request in requests}
    for index, outcome in outcomes.items():
        batch.outcome(index, entity_types.get(index), _outcome_name(outcome))


class PartitionWorker:
    """Consumes one partition's inbox until stopped."""

    def __init__(
        self,
        inbox: Inbox,
        app: App,
        engine: Engine,
        transport: Transport,
        effects: EffectPublisher,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        hooks: WorkerHooks | None = None,
        window: CommandWindow | None = None,
        quarantine: PartitionQuarantine | None = None,
    ) -> None:
        """``window``: how long command ids are kept; older commands are refused.
        ``quarantine``: counts attempts of redelivered commands and sets poison ones
        aside (it wraps ``inbox``: pass it as both)."""
        self.quarantine = quarantine
        self.inbox = inbox
        self.window = window or CommandWindow()
        self.app = app
        self.engine = engine
        self.transport = transport
        self.effects = effects
        self.max_batch = max_batch
        self.hooks = hooks or WorkerHooks()
        self._exchange = transport.topology.commands_exchange
        self._handling = asyncio.Lock()
        self._turns = EntityTurns() if quarantine is None else quarantine.turns
        self._stopping = False
        # Deliveries left for the partition's next owner, by (entity id, command id).
        self._held: dict[tuple[str, str], Delivery] = {}
        self._task: asyncio.Task[None] | None = None
        self.timers: TimerFiring | None = None

    @property
    def partition(self) -> int:
        return self.inbox.partition

    def start(self, timers: TimerFiring | None = None) -> None:
        """Serve the inbox; and fire the partition's timers with ``timers``, if given."""
        self._task = asyncio.create_task(self._run(), name=f"partition-{self.partition}")
        self.timers = timers
        if timers is not None:
            timers.start()
        if self.quarantine is not None:
            self.quarantine.start(self)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` began (it may not have ended: cancelled midway)."""
        return self._stopping

    async def stop(self) -> None:
        """Finish the batch in flight, then hand the rest back to the queue (safe to
        call again after a stop that was cancelled midway)."""
        self._stopping = True
        if self.timers is not None:
            await self.timers.stop()
        if self.quarantine is not None:
            await self.quarantine.stop()
        async with self._handling:
            await self.inbox.close()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while deliveries := await self.inbox.take(self.max_batch):
            async with self._handling:
                if self._stopping:
                    return  # closing the inbox hands these back
                try:
                    await self._handle_until_done(deliveries)
                except (Exception, asyncio.CancelledError) as error:
                    # Replying or settling failed after the commit. Whatever was not
                    # acknowledged comes back and finds its stored reply: the partition
                    # must keep flowing rather than die with this batch (or with a
                    # CancelledError nobody asked for: pachyderm._cancellation).
                    if not is_failure(error):
                        raise
                    log.exception("partition %d: settling a batch failed", self.partition)

    async def fire(self, requests: list[Request], isolate: float | None = None) -> list[Done]:
        """Apply fires of this partition's timers now, beside the batch in flight: they
        wait only while a run holds one of their entities (the batch being decided, if
        it has one), and their changes join the worker's next shared commit. Once the
        partition is stopping they are not fired (their timers stay pending for the
        next owner); a failed commit raises, their timers stay pending."""
        if self._stopping:
            return [Done(gone=True) for _ in requests]
        refs = [request.ref for request in requests]
        async with self._turns.holding(refs):
            # Parked since the timers were read (see PartitionQuarantine._record): left
            # pending, to fire once the entity is released.
            parked = {ref for ref in refs if self._parked(ref)}
            running = [request for request in requests if request.ref not in parked]
            done, committed = await self.engine.run(
                running, partition=self.partition, isolate=isolate if running else None
            )
        await self.effects.publish_committed(committed)
        self._filed(committed)
        if self.quarantine is not None and any(result.fenced for result in done):
            self.quarantine.outdated()  # parked by another worker: read the view again
        results = iter(done)
        # A fenced fire is left pending, as a parked one is.
        return [
            Done(gone=True) if r.ref in parked or (result := next(results)).fenced else result
            for r in requests
        ]

    def _parked(self, ref: Ref) -> bool:
        return self.quarantine is not None and self.quarantine.parked(ref.id)

    def _filed(self, committed: Sequence[Change]) -> None:
        """Wake the timer firing for what these commits filed."""
        if self.timers is None:
            return
        dues = [w.due_at for c in committed for w in c.timers if w.due_at is not None]
        if dues:
            self.timers.wake(min(dues))

    async def _handle_until_done(self, deliveries: Sequence[Delivery]) -> None:
        """Apply a batch; while the store is down, keep trying (nothing is acked meanwhile)."""
        delays = itertools.chain(_STORE_RETRY_DELAYS, itertools.repeat(_STORE_RETRY_DELAYS[-1]))
        for delay in delays:
            try:
                await self.handle(deliveries)
                return
            except StoreError as error:
                if self._stopping:
                    return
                log.warning(
                    "partition %d: store failed, retrying in %ss: %s", self.partition, delay, error
                )
                await asyncio.sleep(delay)

    async def exclusively(self, work: Callable[[], Awaitable[None]]) -> bool:
        """Run ``work`` while no batch is applied; False (not run) once stopping."""
        async with self._handling:
            if self._stopping:
                return False
            await work()
            return True

    async def apply(self, deliveries: Sequence[Delivery]) -> None:
        """Apply ``deliveries`` (stored commands run again) as a batch; hold
        :meth:`exclusively` around it."""
        await self._handle_until_done(deliveries)

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Apply one batch: one commit, then replies and effects, then one ack. With a
        quarantine, poison commands and those of parked entities are set aside first,
        and redelivered ones are decided in a forked child first (see :mod:`._quarantine`)."""
        if self.quarantine is None:
            # Without a quarantine of its own, no entity is parked but by another worker's:
            # left unsettled for the partition's next owner, as a newer worker's are.
            if fenced := await self._apply(deliveries):
                log.warning("partition %d: %d commands fenced", self.partition, len(fenced))
                await self.inbox.ack(self._hold(fenced))
            return
        await self.quarantine.handle(deliveries, self._apply, self)

    async def _apply(
        self, deliveries: Sequence[Delivery], isolate: float | None = None
    ) -> list[Delivery]:
        """``isolate``: decide in a forked child first (:class:`HandlerDiedError` if it dies).
        Returns the deliveries the store fenced (their entities are parked: the quarantine
        parks them), neither answered nor settled."""
        with self.hooks.batch(self._exchange, self.partition, deliveries) as batch:
            decided = await self._decide_isolating(deliveries, isolate)
            verdicts = [
                _verdict(delivery, decided.outcomes[i]) for i, delivery in enumerate(deliveries)
            ]
            try:
                await self._settle(verdicts, decided, batch)
            except TransportError:
                # Committed, but the replies or the settling could not go out, on a
                # channel that may live on (the connection's loss returns them anyway):
                # handed back, they come again and find their stored replies, rather
                # than hold their prefetch places until the partition moves.
                await self.inbox.requeue([v.delivery for v in verdicts if not (v.held or v.fenced)])
                raise
            if batch.measuring:
                _report(batch, decided.requests, decided.outcomes)
        return [v.delivery for v in verdicts if v.fenced]

    async def _settle(self, verdicts: list[_Verdict], decided: _Decided, batch: BatchHooks) -> None:
        """Reply, publish the effects, dead-letter, hold and acknowledge, as decided."""
        await self.transport.publish_replies(
            [verdict.reply for verdict in verdicts if verdict.reply is not None]
        )
        await self.effects.publish_committed(decided.committed, batch=batch)
        self._filed(decided.committed)
        await self.inbox.dead_letter([v.delivery for v in verdicts if v.dead_letter])
        superseded = self._hold([v.delivery for v in verdicts if v.held])
        await self.inbox.ack(
            [v.delivery for v in verdicts if not (v.dead_letter or v.held or v.fenced)] + superseded
        )

    def _hold(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Leave ``deliveries`` unsettled for the partition's next owner; returns those
        they supersede: an earlier delivery of the same command to the same entity (a
        caller's retry), acknowledged rather than held twice, so that retries do not
        pile up against the prefetch limit while the rollout lasts."""
        superseded: list[Delivery] = []
        for delivery in deliveries:
            message = delivery.message
            if not message.message_id:
                continue  # a query: nothing to supersede it
            earlier = self._held.get(key := (message.routing_key, message.message_id))
            if earlier is not None and earlier is not delivery:
                superseded.append(earlier)
            self._held[key] = delivery
        return superseded

    async def _decide_isolating(
        self, deliveries: Sequence[Delivery], isolate: float | None = None
    ) -> _Decided:
        """Parse, decide and commit a batch. If something unforeseen breaks that, do it
        for the deliveries one by one, so that only the one that breaks fails and the
        partition keeps flowing. (Only this phase: nobody has been answered yet.)"""
        try:
            return await self._decide(deliveries, isolate)
        except (StoreError, HandlerDiedError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("partition %d: batch failed; isolating the culprit", self.partition)
        decided = _Decided([], {}, [])
        for index, delivery in enumerate(deliveries):
            try:
                alone = await self._decide([delivery], isolate)
            except (StoreError, HandlerDiedError, asyncio.CancelledError):
                raise
            except Exception as error:
                log.exception(
                    "partition %d: refusing %s", self.partition, delivery.message.message_id
                )
                decided.outcomes[index] = HandlerError(f"internal error: {error!r}")
                continue
            decided.requests.extend((index, request) for _, request in alone.requests)
            decided.outcomes[index] = alone.outcomes[0]
            decided.committed.extend(alone.committed)
        return decided

    async def _decide(
        self, deliveries: Sequence[Delivery], isolate: float | None = None
    ) -> _Decided:
        outcomes: dict[int, Done | PachydermError] = {}
        requests: list[tuple[int, Request]] = []
        for index, delivery in enumerate(deliveries):
            try:
                request = parse_request(self.app, delivery.message)
                if request.kind == COMMAND:
                    # Before deciding: a command older than the window may have applied
                    # already, its id pruned since.
                    self.window.check(delivery.message.headers)
            except (InvalidInputError, CommandExpiredError, NewerSchemaError) as error:
                outcomes[index] = error
            else:
                requests.append((index, request))
        refs: list[Ref] = [request.ref for _, request in requests]
        async with self._turns.holding(refs):  # after the fires of these entities
            results, committed = await self.engine.run(
                [request for _, request in requests], partition=self.partition, isolate=isolate
            )
        outcomes.update(
            (index, result) for (index, _), result in zip(requests, results, strict=True)
        )
        return _Decided(requests, outcomes, committed)
