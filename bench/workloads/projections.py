"""The event log and a projection on the fleet: the log's cost, catch-up, live lag.

One namespace per run, two worker processes serving ``bench.projection_app``
(the counter and ``CounterTotals``, a PostgreSQL read model written with one
statement per batch) on 16 partitions. In order:

1. the log's cost: the RPC workload (counters, ``in_flight`` calls in flight)
   as the product commits (``pachyderm_commit_batch`` assigns positions)
   and with, in this namespace's schema only, ``pachyderm_commit_batch``
   replaced (``CREATE OR REPLACE``) by its own definition with the log's step
   cut out, and the log's heads taken out so that the one-change statement (which
   writes the log itself where its partition's head is) leaves every commit to it;
   then the original and the heads are put back (from
   ``pg_get_functiondef``): in two rounds A B B A of half the RPC workload each
   (which comes first alternates between runs), each side's rate the mean of its four.
2. catch-up: ``catch_up_events`` events stored straight through the store's
   ``commit`` (new counters, ``events_per_change`` ``Increased`` events per
   change, ``changes_per_commit`` changes per commit, partitions spread over all
   16), not through the broker: a million commands would take minutes. Then a
   ``pachyderm projections`` process starts; ``catch_up_per_s``: the events it
   applied over the seconds from its first applied batch to its last.
3. live lag: the RPC workload again, the projection process running; for each
   event committed meanwhile, the moment its batch was applied (``clock_timestamp()``
   in the applying statement, just before that transaction commits) minus its
   ``recorded_at`` (the start of the transaction that committed it). The events of
   the window's first ``settling_s`` seconds are left out of ``lag_p50_ms`` and
   ``lag_p99_ms`` (the runners, idle since the catch-up, poll only every second
   or so until events come again), not out of ``lag_with_first_seconds_p99_ms``.

The read model is checked at the end of each run: one applied row per event of
the log, and each counter's total the sum of its events' amounts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from pachyderm import Client, Ref
from pachyderm.store import Change, Committed, NewEvent, PostgresEventStore
from pachyderm.testing import ProcessFleet

from ..app import ENTITY_TYPE
from ..config import PARTITIONS, ROOT, SEED, WORKERS, Services
from ..fleet import percentile
from ..projection_app import NAME, SPEC, TABLES
from .plan import plan
from .rpc import run_calls

Say = Callable[[str], None]
POLL_INTERVAL = 0.1
LOG_COST_ROUNDS = 2  # of A B B A, each workload a half of the RPC plan
CATCH_UP_TIMEOUT = 900.0
INCREASED = NewEvent("Increased", b"\x81\xa6amount\x01")  # Increased(amount=1), msgpack

# The commit function (migration 0016's pachyderm_commit_batch) without its log: the
# same definition with its step 8 (log heads and event_log rows) cut out, between the
# two comments that open steps 8 and 9.
_LOG_STEP = "    -- 8. The log"
_AFTER_LOG_STEP = "    -- 9. "
_DEFINITION = """
SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = $1 AND p.proname = 'pachyderm_commit_batch'
"""


def without_log_step(definition: str) -> str:
    """``definition`` with the log's step cut out; ValueError if it has no such step."""
    start = definition.index(_LOG_STEP)
    return definition[:start] + definition[definition.index(_AFTER_LOG_STEP, start) :]


@dataclass(frozen=True)
class ProjectionSizes:
    catch_up_events: int = 1_000_000
    events_per_change: int = 10
    changes_per_commit: int = 100
    committers: int = 4
    rpc_entities: int = 1_000
    rpc_increments: int = 20
    in_flight: int = 256
    warmup_calls: int = 500
    settling_s: float = 2.0  # the live lag counts the events committed after these seconds


QUICK_PROJECTIONS = ProjectionSizes(
    catch_up_events=4_000,
    rpc_entities=20,
    rpc_increments=5,
    in_flight=32,
    warmup_calls=20,
    settling_s=0.0,
)


@dataclass(frozen=True)
class ProjectionsRun:
    catch_up_per_s: float
    caught_up_events: int
    store_per_s: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    lag_events: int
    lag_with_first_seconds_p99_ms: float  # counting the first settling_s's too
    rpc_during_lag_per_s: float
    projections_cpu_share_during_lag: float  # of one core: the projection process's
    rpc_with_log_per_s: float
    rpc_without_log_per_s: float
    with_log_first: bool
    errors: int
    read_model_correct: bool
    load_average_at_start: tuple[float, float, float]  # this machine is shared

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "log_cost": 1.0 - self.rpc_with_log_per_s / self.rpc_without_log_per_s,
        }


class Bench:
    """One run's namespace: its fleet, a client, a store and a database connection."""

    def __init__(
        self,
        fleet: ProcessFleet,
        client: Client,
        store: PostgresEventStore,
        db: asyncpg.Connection,
        sizes: ProjectionSizes,
    ) -> None:
        self.fleet, self.client, self.store, self.db, self.sizes = fleet, client, store, db, sizes
        self.schema = fleet.topology.namespace
        self.errors = 0
        self.expected: dict[uuid.UUID, int] = {}  # counter -> total of its amounts
        self._plans = 0

    async def rpc(self, logged: bool = True, share: int = 1) -> float:
        """The RPC workload once (a fresh plan: new counters; a ``share``-th of its
        counters); calls per second. Events committed without the log never reach the
        projection: not ``logged``, not expected."""
        self._plans += 1
        entities = max(1, self.sizes.rpc_entities // share)
        calls = plan(entities, self.sizes.rpc_increments, SEED + self._plans)
        result = await run_calls(self.client, calls, self.sizes.in_flight)
        self.errors += len(result.errors)
        for call in calls:
            if logged and call.command_id in result.replies:
                self.expected[call.ref.id] = self.expected.get(call.ref.id, 0) + call.amount
        return result.per_s

    async def without_log(self) -> Callable[[], Awaitable[None]]:
        """Replace the commit by one that skips the log; what puts the original back.

        The log's heads are taken out meanwhile: the one-change statement (migration
        0018), which writes the log itself, commits only where its partition's head is,
        so every commit goes through the replaced function."""
        original: str = await self.db.fetchval(_DEFINITION, self.schema)
        heads = await self.db.fetch("DELETE FROM log_heads RETURNING partition, position")
        await self.db.execute(without_log_step(original))

        async def restore() -> None:
            await self.db.execute(original)
            await self.db.executemany(
                "INSERT INTO log_heads (partition, position) VALUES ($1, $2)",
                [(row["partition"], row["position"]) for row in heads],
            )

        return restore

    async def store_events(self) -> float:
        """Commit ``catch_up_events`` straight through the store; events per second."""
        sizes = self.sizes
        per_commit = sizes.events_per_change * sizes.changes_per_commit
        commits = iter(range(sizes.catch_up_events // per_commit))

        async def committer() -> None:
            for commit in commits:
                changes = [
                    Change(
                        Ref(ENTITY_TYPE, uuid.uuid4()),
                        0,
                        str(uuid.uuid4()),
                        [INCREASED] * sizes.events_per_change,
                        partition=(commit * sizes.changes_per_commit + index) % PARTITIONS,
                    )
                    for index in range(sizes.changes_per_commit)
                ]
                for change, outcome in zip(changes, await self.store.commit(changes), strict=True):
                    assert isinstance(outcome, Committed), outcome
                    self.expected[change.ref.id] = sizes.events_per_change

        started = time.perf_counter()
        await asyncio.gather(*(committer() for _ in range(sizes.committers)))
        return sizes.catch_up_events / (time.perf_counter() - started)

    async def behind(self) -> int:
        """Log positions the projection has not applied yet (all, before it started)."""
        heads = await self.db.fetchval(
            f'SELECT coalesce(sum(position), 0) FROM "{self.schema}".log_heads'
        )
        cursors = await self.db.fetchval(
            f'SELECT coalesce(sum(position), 0) FROM "{self.schema}".projection_cursors'
            " WHERE projection = $1",
            NAME,
        )
        return int(heads) - int(cursors)

    async def caught_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while await self.behind() > 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"the projection is still {await self.behind():,} behind")
            await asyncio.sleep(POLL_INTERVAL)

    async def catch_up_rate(self) -> tuple[float, int]:
        row = await self.db.fetchrow(
            "SELECT count(*) AS n, extract(epoch FROM max(applied_at) - min(applied_at)) AS s"
            f' FROM "{self.schema}".bench_applied'
        )
        return int(row["n"]) / float(row["s"]), int(row["n"])

    async def lags(self, since: float) -> list[float]:
        rows = await self.db.fetch(
            "SELECT extract(epoch FROM applied_at - recorded_at)::float8 AS lag"
            f' FROM "{self.schema}".bench_applied WHERE recorded_at >= to_timestamp($1)',
            since,
        )
        return [row["lag"] for row in rows]

    async def read_model_correct(self) -> bool:
        applied = await self.db.fetchval(f'SELECT count(*) FROM "{self.schema}".bench_applied')
        logged = await self.db.fetchval(f'SELECT count(*) FROM "{self.schema}".event_log')
        rows = await self.db.fetch(f'SELECT entity_id, total FROM "{self.schema}".bench_totals')
        return applied == logged and {r["entity_id"]: r["total"] for r in rows} == self.expected


def start_projections(fleet: ProcessFleet, folder: Path) -> subprocess.Popen[bytes]:
    """A ``pachyderm projections`` process of the benchmark's app, its output in a log."""
    environment = {
        **os.environ,
        "PACHYDERM_DATABASE_URL": fleet.dsn,
        "PACHYDERM_AMQP_URL": fleet.amqp_url,
        "PACHYDERM_NAMESPACE": fleet.topology.namespace,
        "PACHYDERM_PARTITIONS": str(fleet.topology.partitions),
        "PACHYDERM_WORKER_ID": "projections",
        "PACHYDERM_HEALTH_PORT": "0",
    }
    with (folder / "projections.log").open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "pachyderm", "projections", SPEC],
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


async def _log_cost(bench: Bench, with_log_first: bool) -> tuple[float, float]:
    """RPC calls per second (with the log, without it): each the mean of ``LOG_COST_ROUNDS``
    x 2 workloads of a ``LOG_COST_ROUNDS``-th of the plan, in rounds A B B A (A: with the
    log if ``with_log_first``), so that a drift of this shared machine's speed weighs on
    both alike."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    first = with_log_first
    for logged in (first, not first, not first, first) * LOG_COST_ROUNDS:
        if logged:
            rates[True].append(await bench.rpc(share=LOG_COST_ROUNDS))
            continue
        restore = await bench.without_log()
        try:
            rates[False].append(await bench.rpc(logged=False, share=LOG_COST_ROUNDS))
        finally:
            await restore()
    return statistics.mean(rates[True]), statistics.mean(rates[False])


async def projections_run(
    services: Services, folder: Path, sizes: ProjectionSizes, run: int, say: Say
) -> ProjectionsRun:
    namespace = f"bench_{uuid.uuid4().hex[:10]}"
    load = os.getloadavg()
    async with services.fleet(folder, namespace, SPEC) as fleet:
        store = await PostgresEventStore.connect(services.dsn, schema=namespace, max_size=8)
        db = await asyncpg.connect(services.dsn, server_settings={"search_path": namespace})
        await db.execute(TABLES)
        for name in WORKERS:
            fleet.start_worker(name)
        await fleet.balanced()
        projections: subprocess.Popen[bytes] | None = None
        try:
            async with fleet.client() as client:
                bench = Bench(fleet, client, store, db, sizes)
                warm = plan(sizes.warmup_calls, 1, SEED)
                bench.errors += len((await run_calls(client, warm, sizes.in_flight)).errors)
                for call in warm:
                    bench.expected[call.ref.id] = call.amount
                with_log_first = run % 2 == 0
                with_log, without_log = await _log_cost(bench, with_log_first)
                say(f"RPC with the log {with_log:,.0f}/s, without {without_log:,.0f}/s")
                store_rate = await bench.store_events()
                say(f"stored {sizes.catch_up_events:,} events at {store_rate:,.0f}/s")
                projections = start_projections(fleet, folder)
                await bench.caught_up(CATCH_UP_TIMEOUT)
                catch_up, caught = await bench.catch_up_rate()
                say(f"caught up over {caught:,} events at {catch_up:,.0f}/s")
                since, cpu_before = time.time(), cpu_seconds(projections.pid)
                rpc_rate = await bench.rpc()
                cpu_share = (cpu_seconds(projections.pid) - cpu_before) / (time.time() - since)
                await bench.caught_up(60.0)
                every = await bench.lags(since) or [0.0]
                # Idle since its catch-up, each runner polled only every second or so
                # (the interval doubles to 1 s): the first events wait for that.
                lags = await bench.lags(since + sizes.settling_s) or [0.0]
                say(
                    f"live lag p50 {percentile(lags, 0.5) * 1000:.1f} ms,"
                    f" p99 {percentile(lags, 0.99) * 1000:.1f} ms over {len(lags):,} events;"
                    f" RPC {rpc_rate:,.0f}/s meanwhile; the projection process used"
                    f" {cpu_share:.0%} of a core"
                )
                correct = await bench.read_model_correct()
        finally:
            if projections is not None:
                _stop(projections)
            await db.close()
            await store.close()
    return ProjectionsRun(
        catch_up_per_s=catch_up,
        caught_up_events=caught,
        store_per_s=store_rate,
        lag_p50_ms=percentile(lags, 0.5) * 1000,
        lag_p99_ms=percentile(lags, 0.99) * 1000,
        lag_max_ms=max(lags) * 1000,
        lag_events=len(lags),
        lag_with_first_seconds_p99_ms=percentile(every, 0.99) * 1000,
        rpc_during_lag_per_s=rpc_rate,
        projections_cpu_share_during_lag=cpu_share,
        rpc_with_log_per_s=with_log,
        rpc_without_log_per_s=without_log,
        with_log_first=with_log_first,
        errors=bench.errors,
        read_model_correct=correct,
        load_average_at_start=load,
    )
