"""Firing the due timers of one partition, for as long as its worker owns it.

The owner of a partition reads its timers soonest first, a bounded batch at a
time, up to a short read-ahead, and keeps them: it sleeps until the next is
due and fires what is due through the engine, beside the partition's batches
of deliveries (waiting only for one deciding on the same entity), reading
again only when the read-ahead is spent or a commit of its own files a timer
it should have had. The read of the next read-ahead starts a quarter of it
before the horizon, while the loop goes on firing, so that the timers just
past the horizon do not wait for a read. Fires are pipelined: timers falling
due while earlier fires wait for their commit go out in a fire of their own,
gathered for a few milliseconds (so a slow commit delays the timers due
meanwhile by one commit, not by a queue of them, and they join the next commit
in a handful of fires, not one each); an entity has one timer in flight at a
time (the next fires on the state the first leaves). A new owner finds what an
old one left due on its first read: nothing is kept in memory that the store
does not have, and what is kept is checked again by the fire's commit (a fire
forgets, of what was read, only the versions of the timers it tried: a periodic
timer's next tick, read meanwhile, is kept).

Guarantees: a fire commits only while its timer is pending and due by the
store's clock (never early; never after a cancel or replacement that won), and
its command id is deterministic, so a repeated fire applies once. Firing is
paced by a rate limit shared by the worker's partitions, so an outage's backlog
drains at a bounded rate instead of as a storm. A fire that fails (its handler
raises, or this code cannot read the timer) is tried again with a back-off of
its own (1 s doubling to 5 min), so the timers behind it go on; one that keeps
failing, takes its worker down or hangs it is held after its attempts (see
:mod:`._timer_poison`). The timers of an entity parked behind a quarantined command
(see :mod:`._quarantine`) wait, unfired and uncounted, until it is released, as its
commands do; the firing starts once the partition's quarantine has been read, and reads
leave their timers out (however many, they never fill a batch and keep the others
unread). A former owner of the partition, firing on its older view while the partition
moves, has such a fire refused at commit (:class:`~pachyderm.store.Fenced`): it stays
pending, and the view is read again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from .._app import App
from .._errors import StoreError
from .._hooks import WorkerHooks
from .._wire import Request
from ..store import EventStore, StoredTimer
from ._engine import Done
from ._firing import fire_requests
from ._isolation import HandlerDiedError
from ._outbox import backoff
from ._quarantine import DEFAULT_MAX_ATTEMPTS
from ._timer_poison import TimerPoison

log = logging.getLogger("pachyderm.timers")

# Fires of one partition waiting for their commits at once. Enough that the timers
# falling due during one shared commit all go out before it ends (to join the next):
# a commit lasts up to a few hundred ms under load, and fires are gathered.
_MAX_IN_FLIGHT = 32
# While fires are in flight, a due timer waits this long for others to go with it.
_GATHER = timedelta(milliseconds=3)
# The next read starts this share of the read-ahead before the horizon.
_PREFETCH = 0.25
_NEVER_READ = datetime.min.replace(tzinfo=UTC)

Key = tuple[uuid.UUID, str]
# A timer as it was read: a fire consumes or moves on that version only (a periodic
# timer's next tick, or a postponed one, is another version of its row).
Version = tuple[uuid.UUID, str, datetime]


def _version(timer: StoredTimer) -> Version:
    return timer.entity_id, timer.key, timer.fire_at


class FireBatch(Protocol):
    """Runs fire requests through the partition's engine; one result each. ``isolate``:
    decide them in a forked child first, for at most that many seconds
    (:class:`HandlerDiedError` if it dies or overruns: see ``Engine.run``)."""

    def __call__(
        self, requests: list[Request], isolate: float | None = None
    ) -> Awaitable[list[Done]]: ...


class Parking(Protocol):
    """Which entities of the partition are parked (their poison command quarantined:
    see :mod:`._quarantine`): their timers wait, as their commands do, until released."""

    async def read(self) -> None:
        """Return once the partition's quarantine has been read."""
        ...

    def parked(self, entity_id: uuid.UUID) -> bool: ...

    def parked_entities(self) -> frozenset[uuid.UUID]:
        """Every parked entity of the partition, as last read."""
        ...


@dataclass(frozen=True, slots=True)
class TimerOptions:
    """How a worker fires timers; the defaults suit most fleets.

    ``fire_rate``: fires per second at most, over all of a worker's partitions.
    ``batch``: timers read and fired at once per partition. ``read_ahead``:
    seconds ahead a read looks; the timers it finds are kept and fired as they
    fall due, without reading again. ``poll``: the longest time between reads
    (a safety net: the worker's own commits wake it for what they file).
    """

    fire_rate: float = 10_000.0
    batch: int = 256
    read_ahead: float = 1.0
    poll: float = 1.0


class RateLimit:
    """A token bucket: ``rate`` per second on average, bursts of up to ``rate`` / 10."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate / 10, 1.0)
        self._tokens = self.capacity
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, count: int) -> None:
        """Wait until ``count`` fires are allowed (taken in chunks of the capacity)."""
        async with self._lock:
            while count > 0:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
                self._at = now
                chunk = min(count, int(self.capacity))
                if self._tokens >= chunk:
                    self._tokens -= chunk
                    count -= chunk
                else:
                    await asyncio.sleep((chunk - self._tokens) / self.rate)


class TimerFiring:
    """Fires the due timers of ``partition`` until stopped."""

    def __init__(
        self,
        partition: int,
        app: App,
        store: EventStore,
        fire: FireBatch,
        *,
        limit: RateLimit,
        options: TimerOptions,
        hooks: WorkerHooks,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        parking: Parking | None = None,
        isolation: float | None = None,
    ) -> None:
        """``max_attempts``: a fire's attempts before its timer is held (see
        :mod:`._timer_poison`); ``parking``: the entities whose timers wait (none);
        ``isolation``: risky fires are decided in a forked child first, for at most
        that many seconds (None: in process)."""
        self.partition = partition
        self.app = app
        self.store = store
        self.fire = fire
        self.limit = limit
        self.options = options
        self.hooks = hooks
        self.parking = parking
        self.isolation = isolation
        self.poison = TimerPoison(
            partition, store, hooks, max_attempts=max_attempts, since=_NEVER_READ
        )
        self._wake = asyncio.Event()
        # The timers read ahead, soonest first, and how far the read covers: every
        # pending timer due before the horizon is among them (or was filed by a
        # commit since, which marks them stale).
        self._ahead: list[StoredTimer] = []
        self._horizon = _NEVER_READ
        self._stale = False
        self._full = False  # the horizon is the last timer of a full batch: a backlog
        # The read of the next read-ahead, under way; how far it reaches; and the
        # timers tried since it began (it may hold them as they were).
        self._next: asyncio.Task[list[StoredTimer]] | None = None
        self._next_reach = self._horizon
        self._tried: set[Version] = set()
        self._task: asyncio.Task[None] | None = None
        # Fires waiting for their commits, with the timers they carry.
        self._in_flight: dict[asyncio.Task[set[Version]], list[StoredTimer]] = {}

    def start(self) -> None:
        self.poison.since = datetime.now(UTC)  # timers due before: the former owner's
        self._task = asyncio.create_task(self._run(), name=f"timers-{self.partition}")

    async def stop(self) -> None:
        """Stop the loop, then the fires in flight (their timers stay pending)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        fires = [*self._in_flight]
        for task in fires:
            task.cancel()
        await asyncio.gather(*fires, return_exceptions=True)
        self._in_flight.clear()
        self._drop_next(cancel=True)

    def wake(self, due: datetime) -> None:
        """A commit of this partition filed a timer due at ``due``: read again if the
        timers read ahead should have had it (a later one waits for a later read)."""
        if due <= max(self._horizon, self._next_reach if self._next else self._horizon):
            self._stale = True
            self._wake.set()

    async def _run(self) -> None:
        if self.parking is not None:
            await self.parking.read()  # a parked entity's timer must not fire meanwhile
        failures = 0
        while True:
            try:
                wait = await self._round()
                failures = 0
            except StoreError as error:
                wait = backoff(failures)
                failures += 1
                log.warning("partition %d: firing timers failed: %s", self.partition, error)
            except Exception:
                # A bug must not end the partition's firing for good: log it, try later.
                wait = backoff(failures)
                failures += 1
                log.exception("partition %d: firing timers failed", self.partition)
            await self._sleep(wait)

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or until a commit files a timer due before the horizon
        (since the round began: a wake during the round ends this sleep at once)."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
        # that comes as the wake does (a fire ending as the partition stops), and the
        # loop would never end.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _round(self) -> float:
        """Fire what is due now; the seconds until the next round."""
        self._wake.clear()  # what this round reads covers every wake before it
        self._reap()
        now = datetime.now(UTC)
        busy = {timer.entity_id for timers in self._in_flight.values() for timer in timers}
        waiting = self._waiting(busy)
        due = [timer for timer in waiting if timer.fire_at <= now]
        # Past the horizon, read again once what was read is all fired or in flight: a
        # backlog is read a batch at a time, not again on every round.
        if self._stale or (now >= self._horizon and not due):
            fresh, self._stale = self._stale, False  # a wake during the read marks it again
            await self._read(now, fresh=fresh)
            now = datetime.now(UTC)  # what fell due during the read is due: no sleep for it
            waiting = self._waiting(busy)
            due = [timer for timer in waiting if timer.fire_at <= now]
        prefetch_at = self._prefetch(now)
        if due:
            if len(self._in_flight) >= _MAX_IN_FLIGHT:
                return self.options.poll  # the end of a fire in flight wakes the loop
            if self._in_flight and now < (gathered := due[0].fire_at + _GATHER):
                # Its commit is not before the one in flight ends: let others gather.
                return (gathered - now).total_seconds()
            task = asyncio.create_task(self._fire(due, now), name=f"fire-{self.partition}")
            task.add_done_callback(lambda _task: self._wake.set())
            self._in_flight[task] = due
            return 0.0
        if self._horizon <= now:  # all that was read is in flight: the end of one wakes us
            return self.options.poll
        until = min(waiting[0].fire_at if waiting else self._horizon, self._horizon, prefetch_at)
        return max((until - now).total_seconds(), 0.0)

    def _waiting(self, busy: set[uuid.UUID]) -> list[StoredTimer]:
        """The timers read ahead that may fire: not of an entity with one in flight, nor
        of a parked one (those are read again with the next read-ahead, once a second,
        until the entity is released)."""
        parking = self.parking
        return [
            timer
            for timer in self._ahead
            if timer.entity_id not in busy
            and (parking is None or not parking.parked(timer.entity_id))
        ]

    async def _due(self, until: datetime) -> list[StoredTimer]:
        """Read the partition's timers due by ``until``, a batch at most, those of parked
        entities left out: a batch full of them would keep the others unread."""
        skip = frozenset() if self.parking is None else self.parking.parked_entities()
        return await self.store.due_timers(self.partition, until, self.options.batch, skip=skip)

    def _reap(self) -> None:
        """Forget the timers the fires that ended tried; raise what one of them raised
        (its timers stay, to be tried again after the back-off)."""
        failed: BaseException | None = None
        for task in [task for task in self._in_flight if task.done()]:
            del self._in_flight[task]
            if task.cancelled():
                continue
            if (error := task.exception()) is not None:
                failed = error
                continue
            tried = task.result()
            self._ahead = [timer for timer in self._ahead if _version(timer) not in tried]
            if self._next is not None:
                self._tried |= tried
        if failed is not None:
            raise failed

    def _span(self) -> timedelta:
        return timedelta(seconds=min(self.options.read_ahead, self.options.poll))

    def _prefetch(self, now: datetime) -> datetime:
        """Start the read of the next read-ahead if it is time (not in a backlog: that is
        read a batch at a time, once fired); when it is, if not yet."""
        if self._next is not None or self._full or self._horizon == _NEVER_READ:
            return datetime.max.replace(tzinfo=UTC)
        at = self._horizon - self._span() * _PREFETCH
        if now >= at:
            self._next_reach, self._tried = now + self._span(), set()
            self._next = asyncio.create_task(
                self._due(self._next_reach),
                name=f"timers-read-{self.partition}",
            )
            return datetime.max.replace(tzinfo=UTC)
        return at

    async def _read(self, now: datetime, *, fresh: bool) -> None:
        """Take the timers due within the read-ahead (a bounded batch), and the horizon
        the read covers: the last one's time if the batch is full. The read begun ahead
        serves unless ``fresh`` (a commit filed a timer it may lack), less the timers
        tried since it began."""
        if self._next is None or fresh:
            self._drop_next(cancel=False)
            reach = now + self._span()
            timers = await self._due(reach)
            kept = timers
        else:
            next_read, reach, tried = self._next, self._next_reach, self._tried
            try:
                timers = await next_read
            finally:
                self._next = None
            kept = [timer for timer in timers if _version(timer) not in tried]
        self._ahead = kept
        self._full = len(timers) == self.options.batch
        self._horizon = timers[-1].fire_at if self._full else reach

    def _drop_next(self, *, cancel: bool) -> None:
        """Give up the read begun ahead (its failure, if it fails, with it). Left to end
        unless stopping: cancelling a query costs the database a connection of its own."""
        if self._next is not None:
            if cancel:
                self._next.cancel()
            self._next.add_done_callback(_retrieved)
            self._next = None

    async def _fire(self, due: list[StoredTimer], now: datetime) -> set[Version]:
        """Fire ``due`` (an entity's first timer only: the next waits for the next
        round, on the state this one leaves); the versions of those tried."""
        requests, broken = fire_requests(self.app, due, now)
        # Risky fires (see ._timer_poison) a group at a time, the rest left due for later.
        tried, exhausted, _later = self.poison.split(requests)
        await self.poison.hold(exhausted)
        # A risky fire may be a poison's: decided in a child first, it kills that child,
        # not the worker, and is counted when it does; in process, it is counted first.
        risky = any(self.poison.risky(timer) for timer, _ in tried)
        isolate = self.isolation if risky else None
        counted = isolate is None
        run = await self.poison.count(tried) if counted else tried
        await self.limit.take(len(run))  # what fires: an entity's first timer only
        try:
            results = await self.fire([request for _, request in run], isolate) if run else []
        except HandlerDiedError as died:  # nothing committed
            await self.poison.died(run, died, counted=counted)
            return {_version(timer) for timer, _ in [*tried, *exhausted]}
        fired_at = datetime.now(UTC)
        delays: dict[tuple[uuid.UUID, str], float] = {}
        for (timer, request), result in zip(run, results, strict=True):
            if result.error is not None:
                self._failed(
                    timer, result.error, delays, counted=counted and self.poison.risky(timer)
                )
            elif not result.gone:
                tick = request.timer.due if request.timer else timer.due_at
                self.hooks.timer_fired(timer.entity_type, (fired_at - tick).total_seconds())
        for timer, error in broken:
            self._failed(timer, error, delays)
        if delays:
            await self.store.postpone_timers(delays)
        return {_version(timer) for timer, _ in [*tried, *exhausted, *broken]}

    def _failed(
        self,
        timer: StoredTimer,
        error: Exception,
        delays: dict[Key, float],
        *,
        counted: bool = False,
    ) -> None:
        """Log a failed fire; put its next try off (unless ``counted`` did already)."""
        log.warning(
            "partition %d: timer %r of %s failed (attempt %d): %s",
            self.partition,
            timer.key,
            timer.entity_id,
            timer.attempts + 1,
            error,
        )
        self.hooks.timer_failed(timer.entity_type, error)
        if not counted:
            delays[timer.entity_id, timer.key] = backoff(timer.attempts)


def _retrieved(task: asyncio.Task[list[StoredTimer]]) -> None:
    """Take a dropped read's outcome, so that its failure is not reported as lost."""
    if not task.cancelled():
        task.exception()
