"""A simulated fleet: the real membership code, hundreds of members, no processes, no database.

Each simulated worker runs what a worker process runs (``join``, then ``watch``
of a :class:`~pachyderm.fleet._leased.LeasedMembership`, as
:class:`~pachyderm.worker.Worker` does), on an in-memory store shared by all
(:class:`~pachyderm.fleet._memory_store.MemoryMembershipStore`, which passes
the PostgreSQL store's contract suite), on a virtual clock
(:class:`~pachyderm.fleet._virtual_clock.VirtualClockLoop`). The assignment is
computed by :func:`~pachyderm.fleet.assign` itself. Only the worker around the
membership is a model: it holds exactly the partitions its last ``on_change``
gave it, drops them all when it dies, and leaves as a worker does (leave, then
stop consuming).

A :class:`Ledger` records who holds each partition over time: per change to the
fleet (a :class:`Phase`), how many partitions changed hands against how many had
to (the assignments before and after differ there), when holdings stopped
changing, how long any partition had no holder or two, and what the members
asked of the database.

Deterministic: a seed fixes every start time and name, and the virtual clock
makes nothing depend on the machine; the same seed gives the same figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ._assignment import assign
from ._leased import LeasedMembership
from ._memory_store import MemoryMembershipStore
from ._settling import settled
from ._store import Roll
from ._virtual_clock import VirtualClockLoop

FLEET = "worker"


@dataclass(frozen=True, slots=True)
class Timing:
    """The members' settings, and the database's round trip."""

    heartbeat_interval: float = 0.5
    dead_after: float = 1.5
    join_delay: float | None = None
    """None: the membership's default (``dead_after``); 0: members count as soon as live."""
    prune_every: int = 20
    latency: float = 0.002
    """Seconds each query takes (a round trip to the database)."""
    one_query_heartbeat: bool = True
    """False: a heartbeat renews, then lists the fleet in a second query, as it used to."""


BEFORE = Timing(join_delay=0.0, prune_every=1, one_query_heartbeat=False)
"""The membership as it was: members counted as soon as live, and three queries a
heartbeat (renew, prune, list)."""
AFTER = Timing()
"""The membership as it is: members settle (``join_delay`` = ``dead_after``), a heartbeat
is one query (renew and list), and a member prunes once every 20 heartbeats."""


class _TwoQueryHeartbeat(LeasedMembership):
    """The heartbeat as it was: renew in one query, list the fleet in another."""

    async def _beat(self) -> Roll:
        await self.heartbeat()
        return await self.roll()


@dataclass(frozen=True, slots=True)
class Phase:
    """What one change to the fleet did, from its start until holdings settled."""

    name: str
    workers_before: int
    workers_after: int
    moves: int
    """Partitions some worker started to hold during the phase (each hand-over counts one)."""
    needed: int
    """Partitions whose owner differs between the assignments before and after: the least
    number of moves (at a cold start, every partition)."""
    settle_s: float
    """Seconds from the phase's start until holdings last changed: from then on every
    partition has exactly one holder, as :func:`~pachyderm.fleet.assign` says."""
    max_unowned_s: float
    """The longest time one partition had no holder."""
    unowned_partition_s: float
    """Partition-seconds without a holder, summed over the partitions."""
    max_doubled_s: float
    """The longest time one partition had two holders or more."""
    doubled_partition_s: float
    late_moves: int
    """Moves in the quiet time after holdings settled: must be 0."""
    queries_per_s: float
    """Queries the members sent the database, per second of the phase."""
    entries_per_s: float
    """Rows and live-member entries the database returned, per second of the phase."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ledger:
    """Who holds each partition, and for how long partitions had no holder or two."""

    def __init__(self, partitions: int, now: float) -> None:
        self.partitions = partitions
        self.holdings: dict[str, frozenset[int]] = {}
        self._holders = [0] * partitions
        self._since = [now] * partitions  # when each partition's holder count last changed
        self.reset(now)

    def reset(self, now: float) -> None:
        """Start counting afresh at ``now`` (intervals under way count from ``now``)."""
        self.start = now
        self.moves = 0
        self.last_change = now
        self.max_unowned = self.unowned = self.max_doubled = self.doubled = 0.0

    def hold(self, worker: str, owned: Sequence[int], now: float) -> None:
        """``worker`` holds exactly ``owned`` from ``now`` on."""
        old, new = self.holdings.get(worker, frozenset()), frozenset(owned)
        if old == new:
            return
        for partition in old - new:
            self._count(partition, -1, now)
        for partition in new - old:
            self._count(partition, +1, now)
            self.moves += 1
        self.holdings[worker] = new
        self.last_change = now

    def close(self, now: float) -> None:
        """Count the intervals still under way up to ``now``."""
        for partition in range(self.partitions):
            self._interval(partition, now)
            self._since[partition] = now

    def owners(self) -> list[int]:
        """How many workers hold each partition now."""
        return list(self._holders)

    def _count(self, partition: int, by: int, now: float) -> None:
        self._interval(partition, now)
        self._holders[partition] += by
        self._since[partition] = now

    def _interval(self, partition: int, now: float) -> None:
        length = now - max(self._since[partition], self.start)
        if length <= 0:
            return
        if self._holders[partition] == 0:
            self.unowned += length
            self.max_unowned = max(self.max_unowned, length)
        elif self._holders[partition] > 1:
            self.doubled += length
            self.max_doubled = max(self.max_doubled, length)


@dataclass(slots=True)
class _Member:
    membership: LeasedMembership
    task: asyncio.Task[None]
    reported: bool = False


@dataclass(slots=True)
class FleetSimulation:
    """A fleet of simulated workers sharing ``partitions``; drive it inside :meth:`run`."""

    partitions: int = 1024
    timing: Timing = AFTER
    seed: int = 0
    store: MemoryMembershipStore = field(init=False)
    rng: random.Random = field(init=False)
    members: dict[str, _Member] = field(init=False, default_factory=dict)
    ledger: Ledger = field(init=False)
    _names: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.store = MemoryMembershipStore(latency=self.timing.latency)

    def run(self, script: Callable[[FleetSimulation], Awaitable[list[Phase]]]) -> list[Phase]:
        """Run ``script`` on a fresh virtual clock (its start drawn from the seed); its phases."""
        # The clock's start decides where the join-delay windows fall: vary it with the seed.
        loop = VirtualClockLoop(start=1_000_000.0 + self.rng.uniform(0, 1000))
        self.ledger = Ledger(self.partitions, loop.time())
        try:
            with _quiet_fleet_logs():
                return loop.run_until_complete(self._scripted(script))
        finally:
            loop.close()

    async def _scripted(
        self, script: Callable[[FleetSimulation], Awaitable[list[Phase]]]
    ) -> list[Phase]:
        try:
            return await script(self)
        finally:
            for member in self.members.values():
                member.task.cancel()
            await asyncio.gather(*(m.task for m in self.members.values()), return_exceptions=True)

    # -- the fleet's changes ----------------------------------------------------------

    def name(self) -> str:
        """A new worker id (pods' names: random, from the seed)."""
        self._names += 1
        return f"worker-{self._names:04d}-{self.rng.getrandbits(24):06x}"

    def start(self, worker_id: str) -> None:
        """Start a worker process under ``worker_id`` now (a new run of it)."""
        assert worker_id not in self.members, f"{worker_id} runs already"
        timing = self.timing
        kind = LeasedMembership if timing.one_query_heartbeat else _TwoQueryHeartbeat
        membership = kind(
            self.store,
            worker_id,
            info=worker_id,
            heartbeat_interval=timing.heartbeat_interval,
            dead_after=timing.dead_after,
            join_delay=timing.join_delay,
            fleet=FLEET,
            prune_every=timing.prune_every,
        )
        task = asyncio.get_running_loop().create_task(self._serve(worker_id, membership))
        self.members[worker_id] = _Member(membership, task)

    async def _serve(self, worker_id: str, membership: LeasedMembership) -> None:
        async def on_change(owned: list[int]) -> None:
            self.ledger.hold(worker_id, owned, _now())
            self.members[worker_id].reported = True

        await membership.join()
        await membership.watch(on_change, self.partitions)

    async def start_spread(self, worker_ids: Sequence[str], spread: float) -> None:
        """Start ``worker_ids`` at times drawn uniformly over the next ``spread`` seconds."""
        times = sorted(self.rng.uniform(0, spread) for _ in worker_ids)
        began = _now()
        for worker_id, at in zip(worker_ids, times, strict=True):
            await asyncio.sleep(max(0.0, began + at - _now()))
            self.start(worker_id)

    def kill(self, worker_id: str) -> None:
        """The process dies (SIGKILL, a node lost): it stops at once, without leaving."""
        member = self.members.pop(worker_id)
        member.task.cancel()
        self.ledger.hold(worker_id, [], _now())

    async def leave(self, worker_id: str) -> None:
        """A clean exit, as :meth:`~pachyderm.worker.Worker.run` does: stop watching,
        leave while still consuming, then stop consuming."""
        member = self.members.pop(worker_id)
        member.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await member.task
        await member.membership.leave()
        self.ledger.hold(worker_id, [], _now())

    # -- observing ----------------------------------------------------------------------

    def expected(self) -> dict[str, list[int]]:
        """The assignment among the running workers (what every one should hold, settled)."""
        return assign(self.partitions, self.members)

    def converged(self) -> bool:
        """Every running worker counts, and holds exactly its share; nobody else holds any."""
        timing = self.timing
        roll = self.store.peek(FLEET, timing.dead_after, _now())
        counted = settled(
            roll, timing.dead_after if timing.join_delay is None else timing.join_delay
        )
        if counted != sorted(self.members):
            return False
        expected = self.expected()
        holdings = self.ledger.holdings
        return all(
            holdings.get(worker, frozenset()) == frozenset(expected.get(worker, ()))
            for worker in set(holdings) | set(self.members)
        )

    async def until_converged(self, within: float = 300.0) -> None:
        """Wait (virtually) until :meth:`converged`, polling every 50 ms."""
        deadline = _now() + within
        while not self.converged():
            if _now() > deadline:
                raise AssertionError(f"the fleet did not converge within {within} s")
            await asyncio.sleep(0.05)

    async def until_ready(self, worker_ids: Sequence[str], within: float = 300.0) -> None:
        """Wait until each of ``worker_ids`` reported its partitions once (a worker's readiness)."""
        deadline = _now() + within
        while not all(self.members[w].reported for w in worker_ids if w in self.members):
            if _now() > deadline:
                raise AssertionError(f"workers not ready within {within} s")
            await asyncio.sleep(0.05)

    async def phase(
        self, name: str, change: Callable[[], Awaitable[None]], *, quiet: float | None = None
    ) -> Phase:
        """Apply ``change``, wait until the fleet converged, then ``quiet`` seconds more
        (by default twice ``dead_after``: long enough for a late hand-over to show)."""
        workers_before = len(self.members)
        expected_before = self.expected()
        queries, entries, start = sum(self.store.queries.values()), self.store.rows, _now()
        self.ledger.reset(start)
        await change()
        await self.until_converged()
        settled_at, moves = self.ledger.last_change, self.ledger.moves
        await asyncio.sleep(2 * self.timing.dead_after if quiet is None else quiet)
        end = _now()
        self.ledger.close(end)
        elapsed = end - start
        return Phase(
            name=name,
            workers_before=workers_before,
            workers_after=len(self.members),
            moves=moves,
            needed=_moved(expected_before, self.expected(), self.partitions),
            settle_s=round(settled_at - start, 3),
            max_unowned_s=round(self.ledger.max_unowned, 3),
            unowned_partition_s=round(self.ledger.unowned, 3),
            max_doubled_s=round(self.ledger.max_doubled, 3),
            doubled_partition_s=round(self.ledger.doubled, 3),
            late_moves=self.ledger.moves - moves,
            queries_per_s=round((sum(self.store.queries.values()) - queries) / elapsed, 1),
            entries_per_s=round((self.store.rows - entries) / elapsed, 1),
        )


# -- the changes a fleet goes through -------------------------------------------------


def scenario(
    workers: int, *, spread: float = 1.0
) -> Callable[[FleetSimulation], Awaitable[list[Phase]]]:
    """The changes every size is put through, one after the other (each from the last's
    settled fleet): ``workers`` start within ``spread`` seconds (a cold start), then a
    quiet ten seconds (the steady load on the database), one joins, one leaves, one
    dies, a tenth joins at once, a tenth dies at once, and a rolling restart (a tenth at
    a time, each leaving and starting again under its id one second later, the next
    tenth once those are ready)."""
    tenth = max(1, workers // 10)

    async def script(sim: FleetSimulation) -> list[Phase]:
        names = [sim.name() for _ in range(workers)]
        phases = [await sim.phase("cold start", lambda: sim.start_spread(names, spread))]
        phases.append(await sim.phase("steady", _nothing, quiet=10.0))

        async def join(count: int) -> None:
            for _ in range(count):
                sim.start(sim.name())

        async def die(count: int) -> None:
            for worker in sim.rng.sample(sorted(sim.members), count):
                sim.kill(worker)

        async def leave_one() -> None:
            await sim.leave(sim.rng.choice(sorted(sim.members)))

        async def rolling_restart() -> None:
            running = sorted(sim.members)
            for wave in range(0, len(running), tenth):
                restarted = running[wave : wave + tenth]
                await asyncio.gather(*(sim.leave(worker) for worker in restarted))
                await asyncio.sleep(1.0)
                for worker in restarted:
                    sim.start(worker)
                await sim.until_ready(restarted)

        phases.append(await sim.phase("join one", lambda: join(1)))
        phases.append(await sim.phase("leave one", leave_one))
        phases.append(await sim.phase("die one", lambda: die(1)))
        phases.append(await sim.phase("join a tenth", lambda: join(tenth)))
        phases.append(await sim.phase("die a tenth", lambda: die(tenth)))
        phases.append(await sim.phase("rolling restart", rolling_restart))
        return phases

    return script


def second_worker_joins(delay: float = 0.3) -> Callable[[FleetSimulation], Awaitable[list[Phase]]]:
    """The present algorithm's worst start: one worker, then a second ``delay`` seconds later."""

    async def script(sim: FleetSimulation) -> list[Phase]:
        async def two() -> None:
            sim.start(sim.name())
            await asyncio.sleep(delay)
            sim.start(sim.name())

        return [await sim.phase("second joins 0.3 s after the first", two)]

    return script


async def _nothing() -> None:
    """No change: the phase measures the fleet at rest."""


def _moved(before: dict[str, list[int]], after: dict[str, list[int]], partitions: int) -> int:
    """Partitions whose owner differs (every partition when either side has no owner)."""
    old = {p: w for w, owned in before.items() for p in owned}
    new = {p: w for w, owned in after.items() for p in owned}
    return sum(old.get(p) is None or old.get(p) != new.get(p) for p in range(partitions))


def _now() -> float:
    return asyncio.get_running_loop().time()


@contextlib.contextmanager
def _quiet_fleet_logs() -> Iterator[None]:
    """A thousand members' hand-over logs are noise here (and slow): warnings only."""
    logger = logging.getLogger("pachyderm.fleet")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
