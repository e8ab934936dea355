"""The worker fleet on this machine's RabbitMQ and PostgreSQL: throughput and latency
of a concurrent run, sequential latency, and failover after SIGKILL.

    python -m bench.fleet [--runs 3]

Two worker processes serve examples.demo:APP over 16 partitions; one client
process (this one) calls counter entities. Writes bench/fleet.md and
bench/fleet.json; every run uses a namespace of its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from examples.counter import Counter, Increment
from pachyderm import CallTimeoutError, Client, Ref
from pachyderm.testing import ProcessFleet, process_fleet

HERE = Path(__file__).parent
ROOT = HERE.parent
DSN = os.environ.get("PACHYDERM_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("PACHYDERM_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def timed_call(client: Client, ref: Ref, amount: int, latencies: list[float]) -> None:
    started = time.perf_counter()
    await client.call(ref, Increment(amount=amount), timeout=30)
    latencies.append(time.perf_counter() - started)


async def concurrent(client: Client, entities: int = 200, commands: int = 20) -> dict[str, float]:
    """entities x commands increments, interleaved, at most 256 in flight."""
    rng = random.Random(7)
    work = [(Counter.ref(f"bench-{uuid.uuid4()}"), rng.randint(1, 9)) for _ in range(entities)]
    calls = [(ref, amount) for ref, amount in work for _ in range(commands)]
    rng.shuffle(calls)
    gate = asyncio.Semaphore(256)
    latencies: list[float] = []

    async def one(ref: Ref, amount: int) -> None:
        async with gate:
            await timed_call(client, ref, amount, latencies)

    started = time.perf_counter()
    await asyncio.gather(*(one(ref, amount) for ref, amount in calls))
    elapsed = time.perf_counter() - started
    return {
        "per_s": len(calls) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


async def sequential(client: Client, count: int = 500) -> dict[str, float]:
    latencies: list[float] = []
    ref = Counter.ref(f"bench-seq-{uuid.uuid4()}")
    for _ in range(count):
        await timed_call(client, ref, 1, latencies)
    return {
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


async def failover(fleet: ProcessFleet, client: Client, probes: int = 64) -> float:
    """Seconds from SIGKILL of one worker until every probe entity answers again."""
    refs = [Counter.ref(f"probe-{uuid.uuid4()}") for _ in range(probes)]
    await asyncio.gather(*(client.call(ref, Increment(amount=1)) for ref in refs))
    fleet.workers[0].kill()
    killed = time.monotonic()

    async def answered(ref: Ref) -> float:
        command_id = str(uuid.uuid4())
        while True:
            try:
                await client.call(ref, Increment(amount=1), command_id=command_id, timeout=0.25)
                return time.monotonic() - killed
            except CallTimeoutError:
                continue

    return max(await asyncio.gather(*(answered(ref) for ref in refs)))


async def one_run(folder: Path) -> dict[str, Any]:
    namespace = f"bench_{uuid.uuid4().hex[:10]}"
    async with process_fleet(
        folder, namespace, DSN, AMQP, app="examples.demo:APP", partitions=16, cwd=ROOT
    ) as fleet:
        fleet.start_worker("bench-w1")
        fleet.start_worker("bench-w2")
        await fleet.balanced()
        async with fleet.client() as client:
            await concurrent(client, entities=20, commands=5)  # warm up
            return {
                "concurrent": await concurrent(client),
                "sequential": await sequential(client),
                "failover_s": await failover(fleet, client),
            }


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def pick(path: Callable[[dict[str, Any]], float]) -> dict[str, float]:
        return summary([path(run) for run in runs])

    return {
        "concurrent_per_s": pick(lambda r: r["concurrent"]["per_s"]),
        "concurrent_p50_ms": pick(lambda r: r["concurrent"]["p50_ms"]),
        "concurrent_p99_ms": pick(lambda r: r["concurrent"]["p99_ms"]),
        "sequential_p50_ms": pick(lambda r: r["sequential"]["p50_ms"]),
        "sequential_p99_ms": pick(lambda r: r["sequential"]["p99_ms"]),
        "failover_s": pick(lambda r: r["failover_s"]),
    }


def write(results: dict[str, Any], runs: int, command: str) -> None:
    (HERE / "fleet.json").write_text(json.dumps({"runs": runs, **results}, indent=2) + "\n")
    lines = [
        "# Worker fleet",
        "",
        f"Command: `{command}`",
        "",
        "Two worker processes (16 partitions) on this machine's RabbitMQ and",
        "PostgreSQL (durable commits), one client process; everything shares 2 cores.",
        "Concurrent: 200 counter entities x 20 increments, interleaved, 256 in flight.",
        "Sequential: 500 increments one at a time. Failover: SIGKILL one worker, then",
        "the seconds until 64 probe entities all answer again.",
        "",
        f"Median of {runs} runs (min - max):",
        "",
        "| measure | median | min - max |",
        "|---|---:|---:|",
    ]
    for name, figures in results.items():
        lines.append(
            f"| {name} | {figures['median']:,.2f} | {figures['min']:,.2f} - {figures['max']:,.2f} |"
        )
    (HERE / "fleet.md").write_text("\n".join(lines) + "\n")


async def main(runs: int) -> dict[str, Any]:
    results = []
    for number in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            result = await one_run(Path(folder))
        print(f"run {number + 1}/{runs}: {json.dumps(result)}", flush=True)
        results.append(result)
    return aggregate(results)


def entry() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments.runs))
    write(results, arguments.runs, "python -m bench.fleet " + " ".join(sys.argv[1:]))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    entry()
