"""Timers on the fleet: schedule rate, fire rate, and lateness beside the RPC workload.

One namespace per run, two worker processes serving ``bench.timer_app`` on 16
partitions, every timer scheduled through a real command (``Arm``, sent
fire-and-forget through the broker, so each timer lands in the partition the
broker's consistent hash gives its entity). In order:

1. schedule: ``schedule`` commands, each arming a timer a day ahead; timers per
   second from the first send until the store holds them all.
2. burst: ``burst`` timers due spread evenly over ``burst_window_s`` seconds that
   start once they are all scheduled (the start is set from the rate of step 1
   with a margin, and the run says whether the scheduling really ended before
   it). ``fire_per_s``: the timers over the seconds from the first due time to
   the last fire's commit (when the workers keep up: the timers over the window).
3. steady: ``steady_per_s`` timers a second falling due for ``steady_s`` seconds
   (scheduled before the window) while the RPC workload (256 calls in flight)
   runs throughout the window; lateness p50/p99 of those fires.
4. with pending: all of the above again in a second namespace that first gets
   ``pending`` timers due a day ahead, inserted with one ``INSERT ... SELECT
   generate_series`` into its ``timers`` table (the rows a scheduling command
   writes, with a real payload; a million commands would take minutes), then
   ``VACUUM (ANALYZE)`` and a ``CHECKPOINT``. The two namespaces go through the
   same steps, so their figures differ by the pending timers alone; measured one
   after the other in one namespace, the second steady window came out slower
   with or without the million (the namespace's own growth: this machine's
   server runs with autovacuum off). The order of the two alternates by run.

Lateness of a fire: ``recorded_at`` of its ``Rang`` event (PostgreSQL's ``now()``,
the start of the transaction that committed the fire; its commit is a few
milliseconds later) minus the due time the event carries.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg

from pachyderm import Client, Ref
from pachyderm._scheduling import TimerSpec
from pachyderm.testing import ProcessFleet

from ..config import PARTITIONS, SEED, WORKERS, Services
from ..fleet import percentile
from ..timer_app import ALARM, APP, ARMED, KEY, RANG, RING, SPEC, Arm
from .plan import plan
from .rpc import run_calls

Say = Callable[[str], None]
SENDING_IN_FLIGHT = 500
POLL_INTERVAL = 0.25
FAR_AHEAD_S = 86_400.0
ROUNDING = 1e-5
MARGIN = 2.0  # the scheduling of a window is given this many times its expected time
RPC_CHUNK = (200, 5)  # entities x increments per RPC plan, repeated through the window


@dataclass(frozen=True)
class TimerSizes:
    schedule: int = 20_000
    burst: int = 100_000
    burst_window_s: float = 10.0
    steady_per_s: int = 1_000
    steady_s: float = 20.0
    pending: int = 1_000_000
    in_flight: int = 256


QUICK_TIMERS = TimerSizes(
    schedule=200, burst=500, burst_window_s=1.0, steady_per_s=100, steady_s=2.0, pending=2_000
)


@dataclass(frozen=True)
class Lateness:
    fired: int
    expected: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    early: int  # fires recorded before their due time: must be 0
    scheduled_before_due: bool  # else the window's first timers fired while others were armed
    rpc_per_s: float = 0.0
    io: Io | None = None  # what the database did meanwhile (the steady window's)


@dataclass(frozen=True)
class Io:
    """What the database did during a window: WAL written, and blocks read from outside
    its buffer cache (all of the server's, and the namespace's timers table and indexes,
    as the statistics had them: a backend reports its own at most a second late)."""

    wal_mb: float
    blocks_read: int
    timers_blocks_read: int

    @classmethod
    def between(cls, before: tuple[int, int, int], after: tuple[int, int, int]) -> Io:
        wal, blocks, timers = (b - a for a, b in zip(before, after, strict=True))
        return cls(round(wal / 2**20, 1), blocks, timers)


@dataclass(frozen=True)
class Namespace:
    """What one namespace measured (``pending`` timers a day ahead all along)."""

    pending: int
    schedule_per_s: float
    fire_per_s: float
    burst: Lateness
    burst_scheduled_before_due: bool
    steady: Lateness

    def as_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "schedule_per_s": self.schedule_per_s,
            "fire_per_s": self.fire_per_s,
            "burst_scheduled_before_due": self.burst_scheduled_before_due,
            "phases": {"burst": asdict(self.burst), "steady": asdict(self.steady)},
        }


@dataclass(frozen=True)
class TimersRun:
    """One run: a namespace with no timers but its own, and one with ``pending`` more."""

    plain: Namespace
    loaded: Namespace

    def as_dict(self) -> dict[str, Any]:
        plain, loaded = self.plain, self.loaded
        return {
            "schedule_per_s": plain.schedule_per_s,
            "fire_per_s": plain.fire_per_s,
            "lateness_p50_ms": plain.steady.p50_ms,
            "lateness_p99_ms": plain.steady.p99_ms,
            "schedule_with_1m_pending_per_s": loaded.schedule_per_s,
            "fire_with_1m_pending_per_s": loaded.fire_per_s,
            "lateness_with_1m_pending_p50_ms": loaded.steady.p50_ms,
            "lateness_with_1m_pending_p99_ms": loaded.steady.p99_ms,
            "lateness_p99_growth_with_1m_pending": loaded.steady.p99_ms / plain.steady.p99_ms,
            "burst_scheduled_before_due": plain.burst_scheduled_before_due,
            "pending": loaded.pending,
            "namespaces": {"plain": plain.as_dict(), "with_pending": loaded.as_dict()},
        }

    def phases(self) -> list[Lateness]:
        return [self.plain.burst, self.plain.steady, self.loaded.burst, self.loaded.steady]


class Bench:
    """One run's namespace: its fleet, a client and a database connection."""

    def __init__(self, fleet: ProcessFleet, client: Client, db: asyncpg.Connection) -> None:
        self.fleet, self.client, self.db = fleet, client, db
        self.schema = fleet.topology.namespace

    async def io_counters(self) -> tuple[int, int, int]:
        """WAL position, and blocks read (the server's; the timers table's): see :class:`Io`."""
        row = await self.db.fetchrow(
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS wal,"
            " (SELECT blks_read FROM pg_stat_database WHERE datname = current_database()) AS b,"
            " (SELECT coalesce(sum(heap_blks_read + coalesce(idx_blks_read, 0)), 0)"
            "    FROM pg_statio_all_tables WHERE schemaname = $1 AND relname = 'timers') AS t",
            self.schema,
        )
        assert row is not None
        return int(row["wal"]), int(row["b"]), int(row["t"])

    async def timers(self) -> int:
        return int(await self.db.fetchval(f'SELECT count(*) FROM "{self.schema}".timers'))

    async def _recorded(self, name: str, since: float) -> int:
        query = (
            f'SELECT count(*) FROM "{self.schema}".events'
            " WHERE name = $1 AND recorded_at >= to_timestamp($2)"
        )
        return int(await self.db.fetchval(query, name, since))

    async def arm(self, dues: list[float]) -> float:
        """Schedule one timer per due time (one new alarm each); seconds until all stored."""
        since = time.time()  # each Armed commits after its command was sent
        pending: Iterator[float] = iter(dues)

        async def sender() -> None:
            for due in pending:
                await self.client.send(Ref(ALARM, uuid.uuid4()), Arm(due))

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(min(SENDING_IN_FLIGHT, len(dues)))))
        # Counted as Armed events, not pending timers: a timer may fire (and go)
        # before the last is armed if the scheduling runs past the first due time.
        await _polled(lambda: self._recorded(ARMED, since), len(dues), timeout=600.0)
        return time.perf_counter() - started

    async def wait_fired(self, since: float, count: int, timeout: float) -> None:
        await _polled(lambda: self._recorded(RANG, since), count, timeout)

    async def fires(self, start: float, end: float) -> list[tuple[float, float]]:
        """(due, recorded) seconds since the epoch of the fires due in [start, end)."""
        rows = await self.db.fetch(
            f"SELECT data, extract(epoch FROM recorded_at)::float8 AS at"
            f' FROM "{self.schema}".events WHERE name = $1'
            " AND recorded_at >= to_timestamp($2)",
            RANG,
            start - 1.0,
        )
        alarm = APP.entity_type(ALARM)
        found = [(alarm.decode_event(RANG, bytes(row["data"])).due, row["at"]) for row in rows]
        # A due time travels as a datetime (microseconds): the window's first one may
        # come back a rounding below ``start``.
        return [(due, at) for due, at in found if start - ROUNDING <= due < end]

    async def insert_pending(self, count: int) -> None:
        """``count`` timers a day ahead, as rows (see the module's docstring)."""
        payload = TimerSpec(RING, {}).encode()
        await self.db.execute(
            f'INSERT INTO "{self.schema}".timers (entity_id, timer_key, entity_type, partition,'
            " due_at, fire_at, schedule_id, payload)"
            " SELECT gen_random_uuid(), $1, $2, g % $3, d, d, gen_random_uuid()::text, $4"
            " FROM generate_series(1, $5::int) AS g,"
            " LATERAL (SELECT now() + interval '1 day' + g * interval '1 ms' AS d) AS due",
            KEY,
            ALARM,
            PARTITIONS,
            payload,
            count,
        )
        await self.db.execute(f'VACUUM (ANALYZE) "{self.schema}".timers')
        await self.db.execute("CHECKPOINT")


async def _polled(count: Callable[[], Awaitable[int]], target: int, timeout: float) -> None:
    """Until ``count()`` reaches ``target``, or ``timeout`` seconds (the run then reports
    what it found: fewer fires than expected fail the run)."""
    deadline = time.monotonic() + timeout
    while True:
        if await count() >= target or time.monotonic() > deadline:
            return
        await asyncio.sleep(POLL_INTERVAL)


def _lateness(
    fires: list[tuple[float, float]], expected: int, before_due: bool, rpc_per_s: float = 0.0
) -> Lateness:
    late = [at - due for due, at in fires] or [0.0]
    return Lateness(
        fired=len(fires),
        expected=expected,
        p50_ms=percentile(late, 0.5) * 1000,
        p99_ms=percentile(late, 0.99) * 1000,
        max_ms=max(late) * 1000,
        early=sum(1 for value in late if value < 0),
        scheduled_before_due=before_due,
        rpc_per_s=rpc_per_s,
    )


def _spread(start: float, count: int, window: float) -> list[float]:
    return [start + window * index / count for index in range(count)]


async def _schedule(bench: Bench, sizes: TimerSizes) -> float:
    far = time.time() + FAR_AHEAD_S
    return sizes.schedule / await bench.arm(_spread(far, sizes.schedule, 60.0))


async def _burst(bench: Bench, sizes: TimerSizes, rate: float) -> tuple[float, Lateness, bool]:
    start = time.time() + MARGIN * sizes.burst / rate + 2.0
    end = start + sizes.burst_window_s
    await bench.arm(_spread(start, sizes.burst, sizes.burst_window_s))
    before_due = time.time() < start
    await bench.wait_fired(start - 1.0, sizes.burst, timeout=end - time.time() + 120)
    fires = await bench.fires(start, end)
    last = max((at for _, at in fires), default=end)
    return len(fires) / (last - start), _lateness(fires, sizes.burst, before_due), before_due


async def _rpc_until(client: Client, end: float, in_flight: int) -> float:
    calls = 0
    started = time.perf_counter()
    for chunk in itertools.count():
        if time.time() >= end:
            break
        entities, increments = RPC_CHUNK
        result = await run_calls(client, plan(entities, increments, SEED + 100 + chunk), in_flight)
        calls += len(result.latencies_s)
    return calls / (time.perf_counter() - started)


async def _steady(bench: Bench, sizes: TimerSizes, rate: float) -> Lateness:
    count = int(sizes.steady_per_s * sizes.steady_s)
    start = time.time() + MARGIN * count / rate + 2.0
    end = start + sizes.steady_s
    await bench.arm(_spread(start, count, sizes.steady_s))
    before_due = time.time() < start
    counters = await bench.io_counters()
    rpc_per_s = await _rpc_until(bench.client, end, sizes.in_flight)
    await bench.wait_fired(start - 1.0, count, timeout=120)
    io = Io.between(counters, await bench.io_counters())
    return replace(_lateness(await bench.fires(start, end), count, before_due, rpc_per_s), io=io)


async def timers_run(
    services: Services, folder: Path, sizes: TimerSizes, say: Say, pending_first: bool = False
) -> TimersRun:
    """Both namespaces, the one with the pending timers second unless ``pending_first``."""
    order = (sizes.pending, 0) if pending_first else (0, sizes.pending)
    found = {}
    for pending in order:
        say("with " + (f"{pending:,} timers pending" if pending else "no timers pending"))
        found[pending] = await _namespace_run(services, folder, sizes, pending, say)
    return TimersRun(found[0], found[sizes.pending])


async def _namespace_run(
    services: Services, folder: Path, sizes: TimerSizes, pending: int, say: Say
) -> Namespace:
    namespace = f"bench_{uuid.uuid4().hex[:10]}"
    async with services.fleet(folder, namespace, SPEC) as fleet:
        for name in WORKERS:
            fleet.start_worker(name)
        await fleet.balanced()
        db = await asyncpg.connect(services.dsn)
        try:
            async with fleet.client() as client:
                bench = Bench(fleet, client, db)
                if pending:
                    await bench.insert_pending(pending)
                    say(f"  inserted {pending:,} timers a day ahead: {await bench.timers():,}")
                return await _phases(bench, sizes, pending, say)
        finally:
            await db.close()


async def _phases(bench: Bench, sizes: TimerSizes, pending: int, say: Say) -> Namespace:
    rate = await _schedule(bench, sizes)
    say(f"  scheduled {sizes.schedule:,} at {rate:,.0f}/s")
    fire_rate, burst, before_due = await _burst(bench, sizes, rate)
    say(
        f"  burst of {sizes.burst:,}: fired {burst.fired:,} at {fire_rate:,.0f}/s,"
        f" p99 {burst.p99_ms:,.0f} ms late"
        + ("" if before_due else " (scheduling ran past the first due time)")
    )
    steady = await _steady(bench, sizes, rate)
    say("  " + _said("steady", steady))
    return Namespace(pending, rate, fire_rate, burst, before_due, steady)


def _said(label: str, lateness: Lateness) -> str:
    return (
        f"{label}: {lateness.fired:,}/{lateness.expected:,} fired, lateness p50"
        f" {lateness.p50_ms:.1f} ms, p99 {lateness.p99_ms:.1f} ms, max {lateness.max_ms:.0f} ms,"
        f" {lateness.early} early; RPC {lateness.rpc_per_s:,.0f}/s meanwhile"
        + (
            f"; WAL {lateness.io.wal_mb:,.1f} MB, blocks read {lateness.io.blocks_read:,}"
            f" ({lateness.io.timers_blocks_read:,} of timers)"
            if lateness.io
            else ""
        )
        + ("" if lateness.scheduled_before_due else " (scheduling ran past the first due time)")
    )
