"""Workload 3, fleet capacity: commands waiting in the partitions, then the workers start.

The commands are published fire-and-forget (no ``reply_to``, so the workers
do exactly the production work: apply, commit, ack) before any worker
exists. The rate is the issue's: commands over the seconds from starting the
worker processes until the last command is committed. Beside it: the steady
rate between 10% and 90% committed (no start-up, no tail), and how long the
workers took to report serving their share of the partitions.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from examples.counter import Increment
from pachyderm import Client

from ..config import Services, Sizes
from ..cpu import CpuMeter, per_thousand, postgres_port
from ..systems import Deployment, System, deployed
from .plan import Call, plan

PUBLISHING_IN_FLIGHT = 1_000
PROGRESS_EVERY = 20_000
POLL_INTERVAL = 0.02
Say = Callable[[str], None]


@dataclass(frozen=True)
class DrainResult:
    per_s: float  # from starting the worker processes to the last commit
    steady_per_s: float  # between 10% and 90% committed
    balanced_after_s: float | None  # until every partition was served once (None: later)
    committed: int
    expected: int
    cpu_per_1000: dict[str, float]  # CPU seconds per 1,000 commands, by component

    @property
    def exact(self) -> bool:
        return self.committed == self.expected


async def publish(client: Client, calls: Sequence[Call], say: Say) -> float:
    """Send every call without waiting for replies (each confirmed by the broker); per second."""
    pending: Iterator[Call] = iter(calls)
    step = max(PROGRESS_EVERY, len(calls) // 5)
    sent = 0

    async def sender() -> None:
        nonlocal sent
        for call in pending:
            await client.send(call.ref, Increment(amount=call.amount), command_id=call.command_id)
            sent += 1
            if sent % step == 0:
                say(f"published {sent:,}/{len(calls):,}")

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(min(PUBLISHING_IN_FLIGHT, len(calls)))))
    return len(calls) / (time.perf_counter() - started)


async def wait_committed(deployment: Deployment, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (done := await deployment.committed()) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done:,} of {count:,} commands committed in {timeout:.0f} s")
        await asyncio.sleep(POLL_INTERVAL)
    return done


async def _timed_progress(deployment: Deployment, count: int) -> dict[float, float]:
    """Seconds (monotonic) at which the count first reached 10%, 90% and 100%."""
    marks = {0.1: 0.0, 0.9: 0.0, 1.0: 0.0}
    # A generous bound: a hundred commands a second.
    deadline = time.monotonic() + 60 + count / 100
    while not marks[1.0]:
        done = await deployment.committed()
        now = time.monotonic()
        for share, reached in marks.items():
            if not reached and done >= share * count:
                marks[share] = now
        if now > deadline:
            raise TimeoutError(f"only {done:,} of {count:,} commands committed in time")
        await asyncio.sleep(POLL_INTERVAL)
    return marks


async def drain(
    system: System,
    services: Services,
    folder: Path,
    *,
    sizes: Sizes,
    workers: Sequence[str],
    say: Say,
) -> DrainResult:
    calls = plan(sizes.drain_entities, sizes.drain_commands // sizes.drain_entities, seed=3)
    async with deployed(system, services, folder) as deployment:
        async with deployment.client() as client:
            rate = await publish(client, calls, say)
        say(f"published {len(calls):,} at {rate:,.0f}/s; starting {len(workers)} worker(s)")
        started = time.monotonic()
        deployment.start_workers(workers)
        meter = CpuMeter(os.getpid(), deployment.worker_pids(), postgres_port(services.dsn))
        meter.start()
        balancing = asyncio.create_task(deployment.fleet.balanced(timeout=3600))
        marks = await _timed_progress(deployment, len(calls))
        spent = meter.stop()
        balanced_after = balancing.result() if balancing.done() else None
        balancing.cancel()
        await asyncio.sleep(0.2)  # anything beyond the count would be a duplicate
        committed = await deployment.committed()
    steady = (marks[0.9] - marks[0.1]) or POLL_INTERVAL
    return DrainResult(
        per_s=len(calls) / (marks[1.0] - started),
        steady_per_s=0.8 * len(calls) / steady,
        balanced_after_s=balanced_after,
        committed=committed,
        expected=len(calls),
        cpu_per_1000=per_thousand(spent, len(calls)),
    )
