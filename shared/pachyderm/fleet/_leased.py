"""Fleet membership on leases: which workers are live, so which partitions each consumes.

Each worker renews a lease (its heartbeat) in a :class:`~pachyderm.fleet._store.MembershipStore`
(PostgreSQL's ``workers`` table in a fleet: :class:`~pachyderm.fleet.PostgresMembership`)
and reads who else is live; every worker derives the same assignment from that
list with :func:`~pachyderm.fleet.assign`. Membership only decides who *should*
consume a partition: commits are version-checked, so two workers briefly
consuming one partition is harmless. What matters is that no partition stays
unconsumed for long: a rebalance leaves one so for at most a heartbeat interval,
a dead worker's for at most ``dead_after`` plus an interval.

A worker that just joined is counted in the assignment only once it settled
(see :func:`~pachyderm.fleet._settling.settled`): workers started together are counted
together, so a starting fleet does not hand partitions around at every start.
A worker that leaves or dies stops counting at once: its partitions must not wait.

A worker id belongs to one process at a time. Each run of a worker (each
:class:`LeasedMembership`) holds its id's row with a random instance token:
it takes the row only when it is free, its own, or its holder's lease has
lapsed, renews and deletes only its own, and stops with
:class:`~pachyderm.DuplicateWorkerError` when another live process holds it.
Two processes sharing an id would otherwise consume the same partitions, and
the first to leave would delete the survivor's row, its lease with it.

Members belong to a ``fleet`` (a group: ``"worker"``, ``"projections"``) and
share the partitions with the live members of their own fleet only.

Time is the running event loop's clock (``loop.time()``, monotonic), so the
simulation of a fleet (:mod:`~pachyderm.fleet._simulation`) runs this very
code on a virtual clock.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from .._cancellation import is_failure
from .._errors import DuplicateWorkerError, StoreError
from ._assignment import owned_by, prepare
from ._lease_keeper import LeaseKeeper
from ._port import OnChange
from ._settling import Counted, next_settling
from ._store import Holder, Member, MembershipStore, Roll

log = logging.getLogger("pachyderm.fleet")

# A worker silent this many times `dead_after` is gone for good (crashed, scaled
# away): its row is deleted so the table does not grow with every restart.
_PRUNE_AFTER_DEATHS = 10

# How long a worker waits for another live process's lease on its id to lapse
# before it gives up, in multiples of dead_after: a crashed worker restarted
# under the same id gets in once the lease of its previous run lapses (within
# dead_after), while a second process under a live worker's id is refused.
_JOIN_PATIENCE = 2

# Heartbeats between two prunings by one member: with a few members or a
# thousand, the table is pruned several times a dead_after, at a twentieth
# of the queries it took when every heartbeat pruned.
_PRUNE_EVERY = 20


class LeasedMembership:
    """:class:`~pachyderm.fleet.Membership` on the leases of a ``store``.

    A worker is live while its last heartbeat is younger than ``dead_after``
    seconds by the store's clock, and counted in the assignment once it has
    settled: ``join_delay`` (by default ``dead_after``) to twice that after it
    joined (0: at once; a cold fleet's members that joined together count with
    its first, see :mod:`._settling`; told ``fleet_size``, the first that many count as
    soon as all joined). Every member of a fleet must use the same ``dead_after``,
    ``join_delay`` and ``fleet_size``, or they disagree on the assignment.
    Each member prunes long-dead rows once every ``prune_every`` heartbeats
    (any live member may: one pruning is enough).

    The membership owns ``store`` and closes it in :meth:`close`.
    """

    def __init__(
        self,
        store: MembershipStore,
        worker_id: str,
        *,
        info: str = "",
        heartbeat_interval: float = 0.5,
        dead_after: float = 1.5,
        join_delay: float | None = None,
        fleet_size: int | None = None,
        fleet: str = "worker",
        prune_every: int = _PRUNE_EVERY,
    ) -> None:
        check_timing(heartbeat_interval, dead_after, join_delay)
        if fleet_size is not None and fleet_size < 1:
            raise ValueError(f"fleet_size must be at least 1, not {fleet_size}")
        if prune_every < 1:
            raise ValueError(f"prune_every must be at least 1, not {prune_every}")
        self.store = store
        self._worker_id = worker_id
        self.info = info
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.join_delay = dead_after if join_delay is None else join_delay
        self.fleet_size = fleet_size
        self.fleet = fleet
        self.prune_every = prune_every
        # This run of the worker: it holds the worker id's row with this token.
        self.instance = uuid.uuid4()
        # Renews the lease from a thread while the loop is blocked, if set (the
        # backend sets it: it needs a connection of its own).
        self.keeper: LeaseKeeper | None = None

    @property
    def worker_id(self) -> str:
        """This worker's name, unique in its fleet."""
        return self._worker_id

    async def join(self) -> None:
        """Register this worker as live now, recording a new start time.

        When another live process holds this worker id, it waits for that
        process's lease to lapse, for up to twice ``dead_after`` (a crashed
        worker restarted under its id gets in), then raises
        :class:`~pachyderm.DuplicateWorkerError` naming that process.
        """
        patience = _Patience(_JOIN_PATIENCE * self.dead_after)
        while (holder := await self._claim()) is not None:
            if patience.exhausted():
                raise self._taken(holder)
            await asyncio.sleep(self.heartbeat_interval)

    async def heartbeat(self) -> None:
        """Renew this worker's lease by the store's clock (registering it if need be).

        Raises :class:`~pachyderm.DuplicateWorkerError` when another process
        took this worker id over (after this one's lease lapsed): this worker
        must stop, not serve beside it.
        """
        if await self.store.renew(self.worker_id, self.instance, info=self.info, fleet=self.fleet):
            return
        holder = await self.store.holder(self.worker_id)
        if holder is not None:
            raise self._lost(holder)

    async def _beat(self) -> Roll:
        """A heartbeat and the roll, in one query: as :meth:`heartbeat`, then :meth:`roll`."""
        roll = await self.store.renew_and_roll(
            self.worker_id, self.instance, info=self.info, fleet=self.fleet, lease=self.dead_after
        )
        if roll is not None:
            return roll
        holder = await self.store.holder(self.worker_id)
        if holder is not None:
            raise self._lost(holder)
        return await self.roll()  # the row is gone since: the next heartbeat makes it again

    async def live_workers(self) -> list[str]:
        """The members of this fleet that renewed their lease within the last ``dead_after``
        seconds (settled or not), sorted."""
        return (await self.roll()).workers

    async def roll(self) -> Roll:
        """The live members of this fleet, with their starts and the store's time."""
        return await self.store.roll(self.fleet, self.dead_after)

    async def prune(self) -> None:
        """Delete the rows of workers silent for ten times ``dead_after``: long gone."""
        await self.store.prune(self.dead_after * _PRUNE_AFTER_DEATHS)

    async def leave(self) -> None:
        """Deregister this worker at once: the others take its partitions on their next heartbeat.

        It deletes this instance's row only: never that of another process
        which took this worker id over.

        Call it before you stop consuming: the others start on this worker's
        partitions within a heartbeat interval instead of after ``dead_after``.
        """
        await self.store.leave(self.worker_id, self.instance)

    async def close(self) -> None:
        """Close the store (it does not leave: call :meth:`leave` first for a clean exit)."""
        await self.store.close()

    async def watch(self, on_change: OnChange, partitions: int) -> None:
        """Heartbeat every ``heartbeat_interval`` and report this worker's partitions.

        Joins first, then calls ``on_change`` with the partitions this worker
        owns among ``partitions`` once the first heartbeat succeeds, and again
        whenever they change: none until it has settled (``join_delay``).
        Runs until cancelled, and cancelling it does not leave (see
        :class:`Membership` for a clean shutdown).

        Heartbeats run beside ``on_change``, so a slow hand-over never makes
        this worker look dead. Nothing ends the watch but cancellation and
        :class:`~pachyderm.DuplicateWorkerError`, raised when another live
        process holds this worker id at the start (as :meth:`join` does), or
        took it over later: the caller must then stop serving.

        - When the store cannot be reached, it keeps retrying and keeps the
          partitions it has while its lease lasts; once its last renewal is
          ``dead_after`` old, the others count it dead and take its partitions,
          so it reports none (its lease lapsed: it hands back what it holds
          rather than keep deliveries it cannot commit) and logs an error. It
          reports its partitions again once a heartbeat gets through.
        - When ``on_change`` raises, it logs that and calls it again after the
          next heartbeat, or a heartbeat interval on if none gets through (the store
          away), until it succeeds.
        """
        live = _Latest()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._keep_alive(live))
                tasks.create_task(self._report(live, on_change, partitions))
                if self.keeper is not None:
                    tasks.create_task(self.keeper.run())
        except ExceptionGroup as group:
            # Only _keep_alive ends on its own, and only with this error: raise it as such.
            match group.exceptions:
                case [DuplicateWorkerError() as error]:
                    raise error from None
            raise

    async def _keep_alive(self, live: _Latest) -> None:
        joined = False  # the first contact starts a new run of this worker
        beats = 0
        patience = _Patience(_JOIN_PATIENCE * self.dead_after)
        outage = _Outage(self.worker_id)
        renewed = _now()  # when the last renewal that got through was sent
        while True:
            sent = _now()
            try:
                # A heartbeat later than dead_after is worthless: give up and retry.
                async with asyncio.timeout(self.dead_after):
                    roll = None
                    if joined:
                        roll = await self._beat()
                    elif (holder := await self._claim()) is not None:
                        if patience.exhausted():
                            raise self._taken(holder)
                    else:
                        joined = True
                        roll = await self.roll()
                    if roll is not None:
                        if beats % self.prune_every == 0:
                            await self.prune()
                        beats += 1
                        live.publish(roll)
                        renewed = sent
            except (StoreError, TimeoutError) as error:
                outage.failed(error)
                renewed = self._kept_since(renewed)
                if joined and _now() - renewed >= self.dead_after:
                    outage.lapsed(error, _now() - renewed)
                    live.lapse()
            else:
                outage.ended()
            await asyncio.sleep(self.heartbeat_interval)

    def _kept_since(self, renewed: float) -> float:
        """When the lease was last renewed, by this loop (``renewed``) or by the keeper's
        thread while the loop was blocked (a heartbeat then times out on waking)."""
        ago = None if self.keeper is None else self.keeper.renewed_ago()
        return renewed if ago is None else max(renewed, _now() - ago)

    async def _report(self, live: _Latest, on_change: OnChange, partitions: int) -> None:
        reported: list[int] | None = None
        prepared: tuple[Member, ...] = ()
        counted = Counted(self.join_delay, self.fleet_size)
        roll, received = await live.next()
        while True:
            if roll.members != prepared:  # newcomers' preferences, before they count
                await prepare(partitions, roll.workers)
                prepared = roll.members
            workers = counted(roll)
            failed = False
            # Until this worker has settled, it owns nothing and reports nothing.
            if reported is not None or self.worker_id in workers:
                owned = owned_by(partitions, workers, self.worker_id)
                if owned != reported:
                    failed = not await self._changed(on_change, owned, workers)
                    reported = reported if failed else owned
            roll, received = await self._next_roll(live, roll, received, retrying=failed)

    async def _changed(self, on_change: OnChange, owned: list[int], workers: list[str]) -> bool:
        """Whether ``on_change(owned)`` succeeded (of ``workers``, those counted); either
        is logged, and a failure retried after the next heartbeat. So is a
        ``CancelledError`` this task was not asked for (:mod:`pachyderm._cancellation`):
        ending the reports with it would leave the worker heartbeating on an assignment
        it never changes again, since a task group takes no notice of a child that ends
        cancelled."""
        try:
            await on_change(owned)
        except (Exception, asyncio.CancelledError) as error:
            if not is_failure(error):
                raise
            log.exception("worker %s: on_change(%s) failed; retrying", self.worker_id, owned)
            return False
        log.info("worker %s owns partitions %s of %s", self.worker_id, owned, workers)
        return True

    async def _next_roll(
        self, live: _Latest, roll: Roll, received: float, *, retrying: bool = False
    ) -> tuple[Roll, float]:
        """The next heartbeat's roll; or this one at the instant the next newcomer settles,
        or a heartbeat interval on when ``retrying`` a failed ``on_change``, whichever
        comes first. (No roll comes while the store is away: a hand-over that failed
        then, its lease lapsed, must not wait for the store to be retried.)

        Every member reads from the roll when a newcomer will count
        (:func:`~pachyderm.fleet._settling.next_settling`, on the store's clock):
        looking again at that instant rather than at its next heartbeat, the members
        switch together, so a partition changing hands to a newcomer has two holders
        or none for about a round trip rather than up to a heartbeat interval.
        """
        settles = next_settling(roll, self.join_delay, self.fleet_size)
        waits = [self.heartbeat_interval] if retrying else []
        if settles is not None:
            # The store's clock read roll.now when this worker received the roll (give
            # or take the reply's trip): it reads `settles` that much later on this one.
            waits.append(settles - roll.now - (_now() - received))
        if not waits:
            return await live.next()
        wait = min(waits)
        try:
            # (at least a millisecond: the clock must move for a rounding at the instant)
            async with asyncio.timeout(max(wait, 0.001)):
                return await live.next()
        except TimeoutError:
            now = _now()
            return Roll(roll.now + (now - received), roll.members), now

    async def _claim(self) -> Holder | None:
        """Take this worker id's row for this instance; else who holds it, live."""
        while not await self.store.claim(
            self.worker_id, self.instance, info=self.info, fleet=self.fleet, lease=self.dead_after
        ):
            # Gone since (it left, or was pruned)? Then the row is free: claim again.
            if (holder := await self.store.holder(self.worker_id)) is not None:
                return holder
        return None

    def _taken(self, holder: Holder) -> DuplicateWorkerError:
        return DuplicateWorkerError(
            f"worker id {self.worker_id!r} is taken: another live process ({holder.info})"
            f" runs under it (lease renewed {holder.silent:.1f} s ago, still live after"
            f" waiting {_JOIN_PATIENCE * self.dead_after:.1f} s); give each worker an id"
            " of its own (PACHYDERM_WORKER_ID)",
            worker_id=self.worker_id,
            other=holder.info,
        )

    def _lost(self, holder: Holder) -> DuplicateWorkerError:
        return DuplicateWorkerError(
            f"worker id {self.worker_id!r} was taken over by another process"
            f" ({holder.info}) while this one could not renew its lease; this one stops,"
            " as two processes run under this id: give each worker an id of its own"
            " (PACHYDERM_WORKER_ID)",
            worker_id=self.worker_id,
            other=holder.info,
        )


def check_timing(heartbeat_interval: float, dead_after: float, join_delay: float | None) -> None:
    """Refuse timings that would declare live workers dead, or a negative join delay."""
    # One late heartbeat must not make a worker look dead: dead_after should
    # span a few intervals (three by default).
    if not 0 < heartbeat_interval < dead_after:
        raise ValueError(
            f"need 0 < heartbeat_interval ({heartbeat_interval}) < dead_after ({dead_after})"
        )
    if join_delay is not None and join_delay < 0:
        raise ValueError(f"join_delay must not be negative, not {join_delay}")


def _now() -> float:
    return asyncio.get_running_loop().time()


class _Patience:
    """A time limit that starts counting at the first refusal."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._since: float | None = None

    def exhausted(self) -> bool:
        now = _now()
        if self._since is None:
            self._since = now
        return now - self._since >= self._seconds


class _Latest:
    """The newest roll of live members (and when it came, by the loop's clock), for a
    reader that only ever wants the newest."""

    def __init__(self) -> None:
        self._roll = Roll(0.0, ())
        self._received = 0.0
        self._fresh = asyncio.Event()

    def publish(self, roll: Roll) -> None:
        self._roll, self._received = roll, _now()
        self._fresh.set()

    def lapse(self) -> None:
        """This worker's lease lapsed: a roll without it (nor anyone), once."""
        if self._roll.members:
            self.publish(Roll(self._roll.now + (_now() - self._received), ()))

    async def next(self) -> tuple[Roll, float]:
        """Wait for a roll newer than the last one read; it, and when it came."""
        await self._fresh.wait()
        self._fresh.clear()
        return self._roll, self._received


class _Outage:
    """Logs the database failures of one worker's heartbeat, its lease lapsing, and their end."""

    def __init__(self, worker_id: str) -> None:
        self._worker_id = worker_id
        self._since: float | None = None
        self._reported = False

    def failed(self, error: Exception) -> None:
        if self._since is None:
            self._since = _now()
            log.warning("worker %s: heartbeat failed, retrying: %s", self._worker_id, error)

    def lapsed(self, error: Exception, silent: float) -> None:
        if not self._reported:
            self._reported = True
            log.error(
                "worker %s has not renewed its lease for %.1f s: it lapsed, the other"
                " workers take over its partitions and it hands them back until it"
                " reaches the database again; still retrying: %s",
                self._worker_id,
                silent,
                error,
            )

    def ended(self) -> None:
        if self._since is not None:
            log.warning(
                "worker %s reached the database again after %.1f s",
                self._worker_id,
                _now() - self._since,
            )
            self._since = None
            self._reported = False
