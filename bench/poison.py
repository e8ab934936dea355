"""The poison benchmark: throughput of the RPC workload with 1% poison commands,
against the same workload with none.

    python -m bench.poison [--runs 1] [--share 0.01] [--calls 2000] [--quick]

Each phase, in a namespace of its own on this machine's RabbitMQ and PostgreSQL:
two worker processes (16 partitions, ``PACHYDERM_MAX_ATTEMPTS=3``,
``PACHYDERM_HANDLER_BUDGET=2``) serve :mod:`bench.poison_app`; a supervisor starts
a worker for each that exits, as Kubernetes would. The healthy calls are the RPC
workload's (increments to 1,000 counters, interleaved, seeded, 256 in flight,
through ``pachyderm.Client``). In the poisoned phase, ``--share`` of the calls are
poison commands instead, spread evenly through the plan, each to an entity of its
own, in turn one that kills its worker (``os._exit``) and one that hangs it: the
one that kills takes a worker down with its first attempt (unless it dies unrun
with a worker another took down), the one that hangs is interrupted by the
watchdog at the budget (see ``pachyderm.worker._interruption``) and its worker
goes on; the 2nd and 3rd attempts of both die in forked children (see
``pachyderm.worker._isolation``), then each is quarantined and answered
``quarantined`` (its caller waits for that outside the 256 healthy ones in
flight). Measured: healthy calls answered per second from the first call to the
last healthy answer, their latencies, worker exits, and when
the last poison was answered. The ratio of the two phases is within one run, so a
loaded machine slows both alike (note the load: the lead re-runs it quietly).

Results go under the key ``poison`` of bench/results.json and the section
"Poison commands" of bench/results.md (other keys and sections are kept);
``--quick`` (tiny sizes, no files) is the smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import sys
import tempfile
import time
import uuid
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pachyderm
from examples.counter import Counter, Increment
from pachyderm import CommandQuarantinedError, PachydermError, Ref
from pachyderm.testing import ProcessFleet

from .config import Services
from .fleet import percentile
from .poison_app import SPEC, Crash, Hang, Poisoned
from .run import say
from .standalone import medians, write

KEY = "poison"
SECTION = "## Poison commands"
SETTINGS = {"max_attempts": "3", "handler_budget": "2"}
WORKERS = 2
IN_FLIGHT = 256
HEALTHY_TIMEOUT = 600.0  # a call waits out the crash loop: its throughput is measured
POISON_TIMEOUT = 600.0
METRICS = (
    "per_s_clean",
    "per_s_poisoned",
    "throughput_ratio",
    "p50_ms_clean",
    "p50_ms_poisoned",
    "p99_ms_clean",
    "p99_ms_poisoned",
)


@dataclass(frozen=True)
class Plan:
    """The calls in order: healthy increments, and where each poison goes in."""

    healthy: list[tuple[Ref, int]]
    poisons: dict[int, tuple[Ref, Any]]  # healthy call index -> poison sent before it

    @classmethod
    def of(cls, calls: int, entities: int, share: float, seed: int = 7) -> Plan:
        rng = random.Random(seed)
        refs = [Counter.ref(f"bench-{uuid.uuid4()}") for _ in range(entities)]
        healthy = [(rng.choice(refs), rng.randint(1, 9)) for _ in range(calls)]
        count = round(calls * share)
        poisons = {
            (n * calls) // count: (
                Poisoned.ref(f"poison-{uuid.uuid4()}"),
                Crash() if n % 2 == 0 else Hang(),
            )
            for n in range(count)
        }
        return cls(healthy, poisons)


@dataclass
class Phase:
    """What one phase measured."""

    per_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    quarantined: int = 0
    poisons_done_s: float = 0.0
    exits: list[int] = field(default_factory=list)


async def _supervise(fleet: ProcessFleet) -> None:
    """Start a worker whenever fewer than WORKERS are live (each exit is replaced)."""
    while True:
        while len(fleet.live()) < WORKERS:
            fleet.start_worker(f"w{len(fleet.workers) + 1}", **SETTINGS)
        await asyncio.sleep(0.1)


async def _poison(client: pachyderm.Client, ref: Ref, command: Any, phase: Phase) -> None:
    try:
        await client.call(ref, command, timeout=POISON_TIMEOUT)
    except CommandQuarantinedError:
        phase.quarantined += 1
    except PachydermError as error:
        phase.errors.append(f"poison {ref.id}: {error!r}")


async def _calls(client: pachyderm.Client, plan: Plan, phase: Phase) -> None:
    pending = iter(enumerate(plan.healthy))
    poisons: list[asyncio.Task[None]] = []
    started = time.perf_counter()

    async def caller() -> None:
        for index, (ref, amount) in pending:
            if (poison := plan.poisons.get(index)) is not None:
                poisons.append(asyncio.create_task(_poison(client, *poison, phase)))
            sent = time.perf_counter()
            try:
                await client.call(ref, Increment(amount=amount), timeout=HEALTHY_TIMEOUT)
            except PachydermError as error:
                phase.errors.append(f"{ref.id}: {error!r}")
                continue
            phase.latencies_s.append(time.perf_counter() - sent)

    await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
    phase.per_s = len(phase.latencies_s) / (time.perf_counter() - started)
    await asyncio.gather(*poisons)
    phase.poisons_done_s = time.perf_counter() - started


async def phase(services: Services, plan: Plan) -> Phase:
    """One fleet, one namespace, the plan's calls; the namespace is removed after."""
    measured = Phase()
    namespace = f"bench_poison_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="bench-poison-") as folder:
        async with services.fleet(Path(folder), namespace, SPEC) as fleet:
            for name in ("w1", "w2"):
                fleet.start_worker(name, **SETTINGS)
            await fleet.balanced(timeout=60)
            supervising = asyncio.create_task(_supervise(fleet))
            try:
                async with fleet.client() as client:
                    await _calls(client, plan, measured)
            finally:
                supervising.cancel()
                await asyncio.gather(supervising, return_exceptions=True)
            measured.exits = [c for w in fleet.workers if (c := w.process.poll()) is not None]
    return measured


def load_average() -> float:
    return os.getloadavg()[0]


async def one_run(services: Services, calls: int, entities: int, share: float) -> dict[str, Any]:
    load_before = load_average()
    say("  without poison")
    clean = await phase(services, Plan.of(calls, entities, 0.0))
    say("  with poison")
    poisoned = await phase(services, Plan.of(calls, entities, share))
    for measured in (clean, poisoned):
        for error in measured.errors[:5]:
            say(f"  failed: {error}")
    return {
        "failed_calls": [len(clean.errors), len(poisoned.errors)],
        "calls": calls,
        "poisons": len(Plan.of(calls, entities, share).poisons),
        "per_s_clean": clean.per_s,
        "per_s_poisoned": poisoned.per_s,
        "throughput_ratio": poisoned.per_s / clean.per_s,
        "p50_ms_clean": percentile(clean.latencies_s, 0.5) * 1000,
        "p50_ms_poisoned": percentile(poisoned.latencies_s, 0.5) * 1000,
        "p99_ms_clean": percentile(clean.latencies_s, 0.99) * 1000,
        "p99_ms_poisoned": percentile(poisoned.latencies_s, 0.99) * 1000,
        "quarantined": poisoned.quarantined,
        "last_poison_answered_s": poisoned.poisons_done_s,
        "worker_exits": dict(sorted(Tally(map(str, poisoned.exits)).items())),
        "load_average_1m": [round(load_before, 2), round(load_average(), 2)],
    }


def markdown(data: dict[str, Any], share: float, note: str) -> str:
    spread, runs = data["spread"], data["runs"]

    def row(label: str, name: str, unit: str, digits: int = 0) -> str:
        s = spread[name]
        return (
            f"| {label} | {s['median']:,.{digits}f}{unit} |"
            f" {s['min']:,.{digits}f} to {s['max']:,.{digits}f} |"
        )

    last = runs[-1]
    exits = ", ".join(f"{n} with status {code}" for code, n in last["worker_exits"].items())
    loads = "; ".join(f"{r['load_average_1m'][0]} to {r['load_average_1m'][1]}" for r in runs)
    return f"""{SECTION}

`{data["command"]}` ({len(runs)} run{"s" if len(runs) > 1 else ""}; medians, min to max).
The RPC workload ({last["calls"]:,} increments to counters, 256 in flight, two worker
processes on 16 partitions) without poison, then with {share:.0%} of the calls poison
commands ({last["poisons"]} of them, each to an entity of its own, in turn one that
kills its worker with `os._exit` and one that hangs its event loop until the watchdog
interrupts it after `PACHYDERM_HANDLER_BUDGET=2` s). A supervisor starts a worker for
each that exits. A killing poison takes a worker down with its first attempt at most,
a hanging one none (interrupted, its worker goes on); their other attempts
(`PACHYDERM_MAX_ATTEMPTS=3` in all) are decided in forked children, which die
instead; then each is quarantined.{note}

| Measure | Median | Runs |
|---|---|---|
{row("healthy calls/s, no poison", "per_s_clean", "")}
{row(f"healthy calls/s, {share:.0%} poison", "per_s_poisoned", "")}
{row("throughput, poisoned / clean", "throughput_ratio", "", 3)}
{row("p50 latency, no poison", "p50_ms_clean", " ms", 1)}
{row("p50 latency, poisoned", "p50_ms_poisoned", " ms", 1)}
{row("p99 latency, no poison", "p99_ms_clean", " ms", 1)}
{row("p99 latency, poisoned", "p99_ms_poisoned", " ms", 1)}

- Last run: {last["quarantined"]} of {last["poisons"]} poisons answered `quarantined`, the
  last {last["last_poison_answered_s"]:.0f} s after the first call; worker exits: {exits};
  healthy calls that failed (clean, poisoned): {last["failed_calls"]}.
- The machine's 1-minute load average before and after each run: {loads} (2 cores,
  shared with other work: the ratio is within a run, the absolute rates are not
  comparable with the other sections).
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.poison", description=__doc__)
    parser.add_argument("--runs", type=int, default=1, help="runs to take medians of (1)")
    parser.add_argument("--calls", type=int, default=2_000, help="healthy calls per phase")
    parser.add_argument("--entities", type=int, default=1_000, help="counters called")
    parser.add_argument("--share", type=float, default=0.01, help="poison share of the calls")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run, no files")
    parser.add_argument("--note", default="", help="a sentence for the results page")
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    calls, entities = (200, 50) if arguments.quick else (arguments.calls, arguments.entities)
    runs = 1 if arguments.quick else arguments.runs
    services = Services.from_environment()
    rows = []
    for run in range(runs):
        say(f"poison run {run + 1}/{runs}")
        rows.append(pachyderm.run(one_run(services, calls, entities, arguments.share)))
    shown = ["--runs", str(runs), "--calls", str(calls), "--share", str(arguments.share)]
    command = shlex.join(["python", "-m", "bench.poison", *shown, *(["--quick"] * arguments.quick)])
    data = medians(rows, METRICS, {}, command)
    if not arguments.quick:
        note = f" {arguments.note}" if arguments.note else ""
        write(KEY, SECTION, data, markdown(data, arguments.share, note))
    for name in METRICS:
        say(f"{name}: {data[name]:,.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
