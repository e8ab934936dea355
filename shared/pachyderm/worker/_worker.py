"""A worker process: owns some partitions, serves them, hands them over on exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

from .._app import App
from .._errors import PachydermError, StoreError
from .._expiry import CommandWindow
from .._hooks import WorkerHooks
from .._stack_dumps import task_stacks
from ..fleet import Membership
from ..fleet._port import Abandons
from ..store import EventStore, HasQuarantine
from ..telemetry import TelemetryHooks
from ..transport import Inbox, Transport
from ._admission import Admission, AdmittedInbox
from ._cache import EntityCache
from ._engine import DEFAULT_MAX_ATTEMPTS, Engine
from ._isolation import can_isolate
from ._outbox import EffectPublisher
from ._partition import DEFAULT_MAX_BATCH, PartitionWorker
from ._pruning import PruneOptions, Pruner
from ._quarantine import PartitionQuarantine, QuarantineOptions
from ._reachability import Reachability
from ._timers import RateLimit, TimerFiring, TimerOptions
from ._watchdog import EXIT_STALLED, Watchdog, exit_stalled

log = logging.getLogger("pachyderm.worker")

# 16 partitions' full batches: no bound on one worker of a default fleet, a bound on
# one that serves many more partitions.
DEFAULT_MAX_IN_FLIGHT = 4096
# A partition's stop waits for its batch in flight: a decision (the handler budget,
# 30 s by default), a commit retried after failures (statement timeouts of 15 s), the
# replies published across a broker's reconnection. Far past all of these.
DEFAULT_STOP_LIMIT = 180.0


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """Tuning knobs; the defaults suit most fleets."""

    prefetch: int = 512
    max_batch: int = DEFAULT_MAX_BATCH
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    """Deliveries handled at once across the worker's partitions (0: no limit); see
    :mod:`._admission`."""
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    snapshot_every: int = 100
    cache_capacity: int = 100_000
    idle_timeout: float = 600.0
    effects_grace: float = 5.0
    timers: TimerOptions = field(default_factory=TimerOptions)
    count_timers_every: float = 15.0
    window: CommandWindow = field(default_factory=CommandWindow)
    """How long command ids are kept: older commands are refused (and the ids pruned)."""
    quarantine: QuarantineOptions = field(default_factory=QuarantineOptions)
    """When a command is quarantined, and what that does to its entity (:mod:`._quarantine`)."""
    handler_budget: float | None = None
    """Seconds the event loop may stay blocked before the process exits (None: no
    watchdog; ``pachyderm worker`` sets PACHYDERM_HANDLER_BUDGET)."""
    pruning: PruneOptions = field(default_factory=PruneOptions)
    """How often and how fast the owner of partition 0 prunes; its ``commands`` is
    ``window.retention`` whatever it says."""
    broker_patience: float = 1.0
    """Seconds the broker may stay out of reach before the worker gives up its lease (so
    the others take its partitions) until it reaches the broker again
    (``PACHYDERM_BROKER_PATIENCE``); see :meth:`Worker.run`."""
    stop_limit: float | None = DEFAULT_STOP_LIMIT
    """Seconds a partition leaving this worker may take to stop (its batch in flight
    finishing) before the worker counts itself wedged, logs its tasks' stacks, gives its
    lease up and exits with status 75, so that all its partitions move (None: no limit;
    ``PACHYDERM_STOP_LIMIT``)."""


async def _until_either(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Wait until ``stop`` is set or ``task`` ends."""
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopping, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()


class Worker:
    """Serves the partitions ``membership`` assigns to it until :meth:`run`'s stop event."""

    def __init__(
        self,
        app: App,
        store: EventStore,
        transport: Transport,
        membership: Membership,
        options: WorkerOptions | None = None,
        *,
        hooks: WorkerHooks | None = None,
    ) -> None:
        """``hooks``: the concerns that see the worker's path; by default its telemetry
        (:class:`~pachyderm.telemetry.TelemetryHooks`). Combine several with
        :class:`~pachyderm.worker.Hooks`."""
        self.app = app
        # Telemetry is a worker's default concern, chosen here where a worker is put
        # together; the engine, partitions and outbox only ever see the hooks.
        self.hooks = hooks if hooks is not None else TelemetryHooks()
        self.store = store
        self.transport = transport
        self.membership = membership
        self.options = options or WorkerOptions()
        self.cache = EntityCache(self.options.cache_capacity, self.options.idle_timeout)
        self.engine = Engine(
            app,
            store,
            self.cache,
            snapshot_every=self.options.snapshot_every,
            max_attempts=self.options.max_attempts,
            hooks=self.hooks,
        )
        self.effects = EffectPublisher(
            store, transport, grace=self.options.effects_grace, hooks=self.hooks
        )
        self.pruner = Pruner(
            store,
            replace(self.options.pruning, commands=self.options.window.retention),
            hooks=self.hooks,
        )
        self.timer_rate = RateLimit(self.options.timers.fire_rate)
        limit = self.options.max_in_flight
        self.admission = Admission(limit) if limit else None
        self.pending_timers = 0  # as last counted
        self.partitions: dict[int, PartitionWorker] = {}
        self._assigning = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()  # inboxes of unfinished assignments
        # What ends a worker that is stuck (the watchdog, a wedged stop), after it gave
        # its lease up; tests replace it.
        self.on_stall: Callable[[float], None] = exit_stalled
        self._assignment: frozenset[int] | None = None  # the latest, once there is one
        self._leaving = False
        self._releasing: asyncio.Task[None] | None = None  # stepping aside, see _step_aside
        self.ready = asyncio.Event()

    @property
    def owned(self) -> list[int]:
        return sorted(self.partitions)

    @property
    def serving(self) -> bool:
        """Whether it consumes exactly the partitions last assigned to it, and stays."""
        assigned = self._assignment
        return not self._leaving and assigned is not None and assigned == self.partitions.keys()

    async def run(self, stop: asyncio.Event) -> None:
        """Join the fleet, serve until ``stop`` is set, then leave cleanly.

        If the membership's watch ends with an error (another process took this
        worker's id over: :class:`~pachyderm.DuplicateWorkerError`), the worker
        stops as if ``stop`` were set, then raises that error.
        """
        await self.transport.start()
        await self.membership.join()
        watching = asyncio.create_task(self._watch_while_reachable())
        background = [
            watching,
            asyncio.create_task(self.effects.sweep_forever()),
            asyncio.create_task(self._unload_idle_forever()),
            asyncio.create_task(self._count_timers_forever()),
            *self._watchdog(),
            # One pruner per fleet: the owner of partition 0 (see _pruning).
            asyncio.create_task(self.pruner.run_forever(lambda: 0 in self.partitions)),
        ]
        try:
            with (
                self.hooks.serving(
                    partitions=lambda: len(self.partitions), entities=lambda: len(self.cache)
                ),
                self.hooks.timers_pending(lambda: self.pending_timers),
                self._observing_in_flight(),
            ):
                await _until_either(stop, watching)
        finally:
            self._leaving = True
            for task in background:
                task.cancel()
            # Collected, not raised: what ended the watch is raised below, once left.
            await asyncio.gather(*background, return_exceptions=True)
            # Leave while still consuming: the others take over at once.
            await self.membership.leave()
            await self._assign([])
        ended = watching.exception() if watching.done() and not watching.cancelled() else None
        if ended is not None:
            raise ended

    async def _watch_while_reachable(self) -> None:
        """The membership's watch, while the broker is within reach.

        A worker holds a lease on its partitions for as long as it can consume them:
        once the broker has been out of reach for ``broker_patience`` (its connection
        lost, reconnecting in vain), it leaves the fleet, so the others take its
        partitions within a heartbeat, and joins again once it reaches the broker.
        """
        partitions = self.transport.topology.partitions
        reachable = Reachability(self.transport, self.options.broker_patience)
        while True:
            watching = asyncio.create_task(self.membership.watch(self._assign, partitions))
            lost = asyncio.create_task(reachable.lost())
            try:
                await asyncio.wait({watching, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (watching, lost):
                    task.cancel()
                await asyncio.gather(watching, lost, return_exceptions=True)
            if not lost.done() or lost.cancelled():
                return await watching  # ended on its own: raise what it raised
            log.error(
                "worker %s cannot reach the broker: leaving the fleet until it can",
                self.membership.worker_id,
            )
            await self._step_aside()
            await reachable.back()
            log.warning("worker %s reached the broker again", self.membership.worker_id)

    async def _step_aside(self) -> None:
        """Give up the lease (the others take over at once), then the partitions."""
        try:
            await self.membership.leave()
        except StoreError as error:  # the lease then lapses by itself
            log.warning("leaving the fleet failed: %s", error)
        # Unsettled deliveries went back to their queues with the lost connection; a
        # batch publishing its replies waits for the broker, so this may end later.
        self._releasing = asyncio.create_task(self._release_all())

    async def _release_all(self) -> None:
        try:
            await self._assign([])
        except Exception:  # the broker's loss already handed the deliveries back
            log.exception("releasing the partitions after losing the broker failed")

    def _watchdog(self) -> list[asyncio.Task[None]]:
        """The handler budget's watch, if the options set one (see :mod:`._watchdog`)."""
        if not self.options.handler_budget:
            return []
        watchdog = Watchdog(self.options.handler_budget, on_stall=self._stalled)
        return [asyncio.create_task(watchdog.run())]

    def _stalled(self, seconds: float) -> None:
        """Give the lease up and end the process (:data:`EXIT_STALLED`): the worker is
        stuck. The others take the partitions at once instead of after the lease's lapse."""
        if isinstance(self.membership, Abandons):
            self.membership.abandon()
        self.on_stall(seconds)

    async def _stop(self, partition: PartitionWorker) -> None:
        """Stop a partition leaving this worker; the worker ends if it does not stop in time.

        A stop waits for the batch in flight, which the handler budget, the statement
        timeout and the broker's reconnection each bound; one that waits past
        ``stop_limit`` waits on something that never ends, and would hold every later
        assignment behind it (``_assigning``) while the worker's lease stays live: its
        other partitions would be served by nobody. Ending the process hands everything
        back (its unsettled deliveries return to their queues, its lease is given up).
        """
        limit = asyncio.timeout(self.options.stop_limit)
        try:
            async with limit:
                await partition.stop()
        except TimeoutError:
            if not limit.expired():
                raise  # the stop's own, not the limit's
            log.critical(
                "partition %d did not stop within %g s: the worker is wedged; giving its"
                " lease up and exiting with status %d so that its partitions move. Its"
                " tasks:\n%s",
                partition.partition,
                self.options.stop_limit,
                EXIT_STALLED,
                task_stacks(),
                extra={"event": "worker.wedged", "partition": partition.partition},
            )
            self._stalled(self.options.stop_limit or 0.0)

    def _observing_in_flight(self) -> AbstractContextManager[object]:
        admission = self.admission
        if admission is None:
            return nullcontext()  # no cap: nothing is counted
        return self.hooks.in_flight(lambda: admission.in_flight)

    async def _assign(self, owned: Sequence[int]) -> None:
        """Start serving newly owned partitions; finish and release the others.

        Safe to cancel or fail midway (the membership's watch is cancelled when the
        broker is lost, maybe during one): a partition is forgotten only once it has
        stopped, one whose stop began is stopped (and served anew) by the next call,
        and inboxes opened for an assignment that did not complete are closed. Else
        an inbox nobody takes from keeps consuming, aio-pika restoring its channel
        after each reconnect, and holds a prefetch window of deliveries for good
        (the cluster test's lost commands, sessions 17 to 20).
        """
        self._assignment = frozenset(owned)
        async with self._assigning:
            wanted = set(owned)
            released = [p for p, w in self.partitions.items() if p not in wanted or w.stopping]
            await self._stop_all(released)
            new = sorted(wanted - set(self.partitions))
            inboxes = await self._open_all(new)
            for partition, inbox in zip(new, inboxes, strict=True):
                admitted = inbox if self.admission is None else AdmittedInbox(inbox, self.admission)
                quarantine = self._quarantine(admitted)
                worker = PartitionWorker(
                    admitted if quarantine is None else quarantine,
                    self.app,
                    self.engine,
                    self.transport,
                    self.effects,
                    max_batch=self.options.max_batch,
                    hooks=self.hooks,
                    window=self.options.window,
                    quarantine=quarantine,
                )
                worker.start(
                    TimerFiring(
                        partition,
                        self.app,
                        self.store,
                        worker.fire,
                        limit=self.timer_rate,
                        options=self.options.timers,
                        hooks=self.hooks,
                        max_attempts=self.options.quarantine.max_attempts,
                        parking=quarantine,
                        isolation=self._fire_isolation(),
                    )
                )
                self.partitions[partition] = worker
            if released or wanted:
                log.info("serving partitions %s", self.owned)
            self.ready.set()

    async def _stop_all(self, partitions: Sequence[int]) -> None:
        """Stop these partitions, forgetting each once it stopped; the first failure is
        raised once all were tried (those that failed stay, to be stopped again)."""
        outcomes = await asyncio.gather(
            *(self._stop(self.partitions[p]) for p in partitions), return_exceptions=True
        )
        for partition, outcome in zip(partitions, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                del self.partitions[partition]
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _open_all(self, partitions: Sequence[int]) -> list[Inbox]:
        """Open the inboxes of these partitions, all before serving any: once the first
        pour their backlog in, opening the rest one by one would wait behind it. If
        one fails, or this is cancelled, those that opened are closed again."""
        prefetch = self.options.prefetch
        opening = [
            asyncio.ensure_future(self.transport.open_inbox(p, prefetch)) for p in partitions
        ]
        try:
            return await asyncio.gather(*opening)
        except BaseException:
            # In the background: on a lost connection a close waits out its RPC's
            # timeout (a heartbeat), and a caller cancelling this must not wait for it.
            closing = asyncio.create_task(_close_opened(opening))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            raise

    def _fire_isolation(self) -> float | None:
        """How long a risky timer fire may be decided in a forked child (None: in
        process), as the quarantine isolates redelivered commands."""
        return self.options.quarantine.isolation if can_isolate() else None

    def _quarantine(self, inbox: Inbox) -> PartitionQuarantine | None:
        """The partition's inbox seen through the quarantine, if the store keeps one."""
        if not isinstance(self.store, HasQuarantine):
            return None
        return PartitionQuarantine(
            inbox,
            self.store.quarantine_store(),
            self.store,
            self.transport,
            self.options.quarantine,
            hooks=self.hooks,
        )

    async def _unload_idle_forever(self) -> None:
        interval = max(self.options.idle_timeout / 4, 0.05)
        while True:
            await asyncio.sleep(interval)
            if unloaded := self.cache.unload_idle():
                log.debug("unloaded %d idle entities", unloaded)

    async def _count_timers_forever(self) -> None:
        """Keep :attr:`pending_timers` fresh for the gauge (a count is a scan: not often)."""
        while True:
            try:
                self.pending_timers = await self.store.count_timers()
            except StoreError as error:
                log.debug("counting timers failed: %s", error)
            await asyncio.sleep(self.options.count_timers_every)


async def _close_opened(opening: Sequence[asyncio.Future[Inbox]]) -> None:
    """Close the inboxes that did open, once every opening ended; one that fails to
    close has stopped consuming all the same (its channel is gone, or goes with its
    connection, and is not restored)."""
    await asyncio.gather(*opening, return_exceptions=True)
    for task in opening:
        if task.done() and not task.cancelled() and task.exception() is None:
            with contextlib.suppress(PachydermError):
                await task.result().close()
