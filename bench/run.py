"""The benchmark: Pachyderm beside the broker's limit (raw_broker) and the naive design
(naive_worker), on this machine's RabbitMQ and PostgreSQL.

    python -m bench [--runs 3] [--only rpc,drain] [--systems pachyderm,raw_broker]
    python -m bench --quick          # tiny sizes, one run, no files: the smoke test

    PACHYDERM_BENCH_COMMIT_DELAY=0.002 python -m bench ...   # every commit 2 ms slower

Workloads: rpc, sequential, drain, failover, cold_load, memory, and profile
(one more RPC pass under py-spy, if installed). Writes bench/results.md and
bench/results.json (not with --quick, --only or --systems, which are for iterating;
--json-out writes the JSON elsewhere). Exits 1 if a correctness check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shlex
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pachyderm

from . import report
from .config import QUICK, WORKERS, Services, Sizes
from .machine import describe
from .phases import profiled_rpc, rpc_phase
from .profiling import py_spy
from .results import PACHYDERM_1_WORKER, Collected, ProfiledRun, Results
from .slow_commits import DELAY, commit_delay
from .systems import PACHYDERM, RAW_BROKER, SYSTEMS
from .workloads.cold_load import cold_loads
from .workloads.commit_latency import commit_latency
from .workloads.drain import drain
from .workloads.failover import failover
from .workloads.memory import cache_bytes_per_entity, memory

WORKLOADS = ("rpc", "sequential", "drain", "failover", "cold_load", "memory", "profile")
PROFILED = (PACHYDERM, RAW_BROKER)


def say(message: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


def _prefixed(prefix: str) -> Callable[[str], None]:
    return lambda message: say(prefix + message)


@dataclass(frozen=True)
class Options:
    runs: int
    sizes: Sizes
    workloads: tuple[str, ...]
    systems: tuple[str, ...]
    services: Services
    command: str
    quick: bool


def _rotated(names: Sequence[str], run: int) -> list[str]:
    """A different system first in each run, so none always gets the freshest machine."""
    shift = run % len(names)
    return [*names[shift:], *names[:shift]]


async def _rpc_and_sequential(options: Options, run: int, folder: Path, found: Collected) -> None:
    rpc, sequential = "rpc" in options.workloads, "sequential" in options.workloads
    for name in _rotated(options.systems, run):
        phase = await rpc_phase(
            SYSTEMS[name], options.services, folder, options.sizes, rpc=rpc, sequential=sequential
        )
        if rpc:
            found.add(found.rpc, name, phase.rpc)
            found.add(found.cpu, name, phase.cpu_per_1000)
            found.add(found.correctness, name, phase.correctness)
            verdict = "correct" if phase.correctness["ok"] else "INCORRECT"
            say(
                f"rpc {name}: {phase.rpc['per_s']:,.0f}/s, p50 {phase.rpc['p50_ms']:.1f} ms,"
                f" p99 {phase.rpc['p99_ms']:.1f} ms, {verdict}"
            )
            for problem in phase.correctness["first_problems"]:
                say(f"  {problem}")
        if sequential:
            found.add(found.sequential, name, phase.sequential)
            say(
                f"sequential {name}: p50 {phase.sequential['p50_ms']:.2f} ms,"
                f" p99 {phase.sequential['p99_ms']:.2f} ms"
            )


async def _drains(options: Options, run: int, folder: Path, found: Collected) -> None:
    variants: list[tuple[str, str, Sequence[str]]] = [
        (name, name, WORKERS) for name in _rotated(options.systems, run)
    ]
    if PACHYDERM in options.systems:
        variants.append((PACHYDERM_1_WORKER, PACHYDERM, WORKERS[:1]))
    for label, name, workers in variants:
        result = await drain(
            SYSTEMS[name],
            options.services,
            folder,
            sizes=options.sizes,
            workers=workers,
            say=_prefixed(f"drain {label}: "),
        )
        found.add(found.drain, label, result)
        exact = "exact" if result.exact else f"NOT EXACT: {result.committed:,}"
        balanced = result.balanced_after_s
        say(
            f"drain {label}: {result.per_s:,.0f}/s from process start, steady"
            f" {result.steady_per_s:,.0f}/s, partitions balanced after "
            + ("the end" if balanced is None else f"{balanced:.1f} s")
            + f", {exact}"
        )


async def one_run(options: Options, run: int, folder: Path, found: Collected) -> None:
    sizes, services = options.sizes, options.services
    if {"rpc", "sequential"} & set(options.workloads):
        await _rpc_and_sequential(options, run, folder, found)
    if "sequential" in options.workloads:
        latencies = await commit_latency(services.dsn, sizes.commit_latency_commits)
        found.commit_latency.append(latencies)
        for setup, latency in latencies.items():
            say(f"one commit, {setup}: p50 {latency['p50_ms']:.2f}, p99 {latency['p99_ms']:.2f} ms")
    if "drain" in options.workloads:
        await _drains(options, run, folder, found)
    if "failover" in options.workloads:
        trials = await failover(services, folder, sizes, say)
        found.failover_s.extend(trials)
    if "cold_load" in options.workloads:
        timings = await cold_loads(services.dsn, sizes)
        found.cold_load_ms.append(timings)
        say("cold load: " + ", ".join(f"{label} {ms:.2f} ms" for label, ms in timings.items()))
    if "memory" in options.workloads:
        result = await memory(services, folder, sizes, _prefixed("memory: "))
        found.memory.append(result)
        say(
            f"memory: {result.loaded_rss_mib:.1f} MiB with {result.entities:,} counters cached,"
            f" {result.idle_rss_mib:.1f} MiB idle: {result.bytes_per_entity:,.0f} B per counter"
        )


async def _profile(options: Options, folder: Path, found: Collected) -> None:
    executable = py_spy()
    if executable is None:
        say("profile: py-spy is not installed (pip install py-spy): skipped")
        return
    for name in [name for name in PROFILED if name in options.systems]:
        profiles, elapsed, cpu = await profiled_rpc(
            SYSTEMS[name], options.services, folder, options.sizes, executable
        )
        found.profiles[name] = ProfiledRun(profiles, elapsed, cpu)
        counts = ", ".join(f"{part} {profile.samples:,}" for part, profile in profiles.items())
        say(f"profile {name}: samples of {counts}")


def _cancel_once(task: asyncio.Task[Results]) -> None:
    if not task.cancelling():
        task.cancel()


async def benchmark(options: Options) -> Results:
    # SIGTERM unwinds like Ctrl-C, so every namespace and worker process is cleaned up;
    # only the first one counts, or a second would cut the clean-up short.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _cancel_once, main_task)
    if commit_delay():
        say(f"every commit slowed by {commit_delay() * 1000:g} ms ({DELAY})")
    say("machine: measuring the disk's fsync rate and reading versions")
    machine = await describe(options.services.dsn, options.services.amqp_url)
    found = Collected(runs=options.runs)
    with tempfile.TemporaryDirectory(prefix="pachyderm-bench-") as scratch:
        folder = Path(scratch)
        for run in range(options.runs):
            say(f"run {run + 1}/{options.runs}")
            await one_run(options, run, folder, found)
        if "profile" in options.workloads:
            await _profile(options, folder, found)
    if "memory" in options.workloads:
        found.cache_bytes_per_entity = cache_bytes_per_entity(options.sizes.memory_entities)
    return Results(found, machine, options.command)


def _names(text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(allowed)}")
    return names


def parse_options(argv: Sequence[str]) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=3, help="runs to take medians of (3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run, no files")
    parser.add_argument(
        "--only", type=lambda text: _names(text, WORKLOADS), default=WORKLOADS,
        help=f"comma-separated workloads of {', '.join(WORKLOADS)}",
    )  # fmt: skip
    parser.add_argument(
        "--systems", type=lambda text: _names(text, list(SYSTEMS)), default=tuple(SYSTEMS),
        help=f"comma-separated systems of {', '.join(SYSTEMS)}",
    )  # fmt: skip
    parser.add_argument("--database-url", help="default: PACHYDERM_BENCH_DATABASE_URL, local")
    parser.add_argument("--amqp-url", help="default: PACHYDERM_BENCH_AMQP_URL, local")
    parser.add_argument("--json-out", type=Path, help="also write the results JSON here")
    arguments = parser.parse_args(argv)
    quick = bool(arguments.quick)
    shown = [arg for arg in argv if not arg.startswith(("--database-url", "--amqp-url"))]
    options = Options(
        runs=1 if quick else arguments.runs,
        sizes=QUICK if quick else Sizes(),
        workloads=arguments.only,
        systems=arguments.systems,
        services=Services.from_environment(arguments.database_url, arguments.amqp_url),
        command=shlex.join(["python", "-m", "bench", *shown]),
        quick=quick,
    )
    return options, arguments.json_out


def main(argv: Sequence[str] | None = None) -> int:
    options, json_out = parse_options(sys.argv[1:] if argv is None else argv)
    try:
        results = pachyderm.run(benchmark(options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted: namespaces and workers cleaned up, nothing written")
        return 130
    complete = options.workloads == WORKLOADS and options.systems == tuple(SYSTEMS)
    if not options.quick and complete:
        page, data = report.write(results)
        say(f"wrote {page} and {data}")
    if json_out is not None:
        json_out.write_text(json.dumps(results.as_json(), indent=2) + "\n")
    for target in results.targets():
        verdict = "-" if target.met is None else ("met" if target.met else "MISSED")
        value = "-" if target.value is None else f"{target.value:,.2f}{target.unit}"
        say(f"{target.name}: {value} (wanted {target.wanted}): {verdict}")
    correct = all(results.correct().values()) and all(
        result.exact for runs in results.collected.drain.values() for result in runs
    )
    return 0 if correct else 1
