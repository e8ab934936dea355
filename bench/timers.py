"""The timers benchmark (bench/workloads/timers.py), on its own.

    python -m bench.timers [--runs 3] [--quick] [--json-out PATH]

Medians over the runs go under the key ``timers`` of bench/results.json (the
other keys are kept) and into the "Timers" section of bench/results.md (the
rest of the page is kept); ``--quick`` (tiny sizes, one run) writes neither.
Exits 1 if a timer fired early or not at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pachyderm

from .config import Services
from .run import _cancel_once, say
from .standalone import Target, medians, write
from .workloads.timers import QUICK_TIMERS, TimerSizes, TimersRun, timers_run

KEY = "timers"
SECTION = "## Timers"
METRICS = (
    "schedule_per_s",
    "fire_per_s",
    "lateness_p50_ms",
    "lateness_p99_ms",
    "schedule_with_1m_pending_per_s",
    "fire_with_1m_pending_per_s",
    "lateness_with_1m_pending_p50_ms",
    "lateness_with_1m_pending_p99_ms",
    "lateness_p99_growth_with_1m_pending",
)
LOADED = "lateness_with_1m_pending_"
TARGETS: dict[str, Target] = {
    "fire_per_s": (">=", 5_000.0),
    "lateness_p99_ms": ("<=", 100.0),
    "lateness_with_1m_pending_p99_ms": ("<=", 100.0),
    # "No lateness growth" with a million pending: within 10%, the noise between two
    # namespaces measured one after the other on this machine.
    "lateness_p99_growth_with_1m_pending": ("<=", 1.1),
}


async def measure(runs: int, sizes: TimerSizes, services: Services) -> list[TimersRun]:
    # SIGTERM unwinds like in bench/run.py: workers stopped, namespaces removed.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _cancel_once, main_task)
    found = []
    with tempfile.TemporaryDirectory(prefix="pachyderm-bench-timers-") as scratch:
        for run in range(runs):
            say(f"timers run {run + 1}/{runs}")
            # The namespace with the pending million goes second in even runs, first in
            # odd ones: a drift of the machine over a run does not favour either.
            found.append(
                await timers_run(
                    services, Path(scratch), sizes, lambda m: say("  " + m), run % 2 == 1
                )
            )
    return found


def as_json(runs: list[TimersRun], command: str) -> dict[str, Any]:
    return medians([run.as_dict() for run in runs], METRICS, TARGETS, command)


def correct(runs: list[TimersRun]) -> bool:
    phases = [phase for run in runs for phase in run.phases()]
    return all(phase.early == 0 and phase.fired == phase.expected for phase in phases)


def markdown(data: dict[str, Any], sizes: TimerSizes) -> str:
    spread = data["spread"]

    def row(label: str, name: str, unit: str, digits: int = 1) -> str:
        figures = spread[name]
        target = data["targets"].get(name)
        wanted = f"{target['target']} ({'met' if target['met'] else 'MISSED'})" if target else "-"
        return (
            f"| {label} | {figures['median']:,.{digits}f}{unit} | {figures['min']:,.{digits}f}"
            f" to {figures['max']:,.{digits}f} | {wanted} |"
        )

    runs = data["runs"]
    pending = f"{sizes.pending:,}"
    window_rate = f"{sizes.burst / sizes.burst_window_s:,.0f}/s"
    before = sum(1 for run in runs if run["burst_scheduled_before_due"])
    return f"""{SECTION}

`{data["command"]}` ({len(runs)} runs; medians, min to max). Two worker processes
serving `bench.timer_app:APP` (the counter and an `Alarm` that schedules one
`Ring`), 16 partitions, this machine's RabbitMQ and PostgreSQL, default
`TimerOptions`. Every timer but the pending million is scheduled by a real
`Arm` command sent through the broker (`Client.send`), so it lands in the
partition the broker's consistent hash gives its entity.

| Measure | Median | Runs | Target |
|---|---|---|---|
{row("schedule: timers created through commands", "schedule_per_s", "/s")}
{row(f"fire rate: {sizes.burst:,} due within {sizes.burst_window_s:g} s", "fire_per_s", "/s")}
{row("lateness p50, steady, RPC workload running", "lateness_p50_ms", " ms")}
{row("lateness p99, steady, RPC workload running", "lateness_p99_ms", " ms")}
{row(f"schedule, with {pending} pending", "schedule_with_1m_pending_per_s", "/s")}
{row(f"fire rate, with {pending} pending", "fire_with_1m_pending_per_s", "/s")}
{row(f"lateness p50, steady, with {pending} pending", LOADED + "p50_ms", " ms")}
{row(f"lateness p99, steady, with {pending} pending", LOADED + "p99_ms", " ms")}
{row("lateness p99 with them / without (per run)", "lateness_p99_growth_with_1m_pending", "x", 2)}

- schedule: {sizes.schedule:,} `Arm` commands (500 sends in flight), each scheduling a
  timer a day ahead; from the first send until the `timers` table holds them all.
- fire rate: {sizes.burst:,} timers (one per alarm) due evenly over {sizes.burst_window_s:g} s
  starting after their scheduling ended (in {before} of {len(runs)} runs it did end
  before the first due time); the timers over the seconds from the first due time
  to the commit of the last fire. When the workers keep up this is the window's own
  rate ({window_rate}): the fleet fired as fast as the timers fell due.
- steady: {sizes.steady_per_s:,} timers a second falling due for {sizes.steady_s:g} s (scheduled
  before the window), while the RPC workload (counters, 256 calls in flight) runs through
  the whole window. Lateness of a fire: `recorded_at` of its `Rang` event (the start of
  the transaction that committed the fire) minus its due time; no fire was early.
- with pending: the same steps in a second namespace that first gets {pending} timers
  due a day ahead, inserted with one `INSERT ... SELECT generate_series` into its
  `timers` table (the rows a scheduling command writes, with a real `Ring` payload,
  spread over the 16 partitions), then `VACUUM (ANALYZE)` and `CHECKPOINT` (inserting
  them through a million commands would take minutes per run). The two namespaces
  differ by the pending timers alone; which is measured first alternates by run.
  (Measured one after the other in one namespace, as before session 9, the later
  window was slower with or without the million: the namespace's own growth, on a
  server with autovacuum off.) Growth: each run's p99 with them over its p99
  without, the median of those ratios.
- the database in the steady windows, per run (without / with {pending} pending):
{_io_lines(runs)}
"""


def _io_lines(runs: list[dict[str, Any]]) -> str:
    """Each run's WAL and blocks read in its two steady windows (see ``Io``)."""
    lines = []
    for number, run in enumerate(runs, start=1):
        plain, loaded = (
            run["namespaces"][name]["phases"]["steady"].get("io") or {}
            for name in ("plain", "with_pending")
        )
        if not plain or not loaded:
            continue
        lines.append(
            f"  - run {number}: WAL {plain['wal_mb']:,.1f} / {loaded['wal_mb']:,.1f} MB, blocks"
            f" read {plain['blocks_read']:,} / {loaded['blocks_read']:,}"
            f" (of the timers table and indexes {plain['timers_blocks_read']:,}"
            f" / {loaded['timers_blocks_read']:,})"
        )
    return "\n".join(lines) or "  (not measured)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timers", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs to take medians of (3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run, no files")
    parser.add_argument("--database-url", help="default: PACHYDERM_BENCH_DATABASE_URL, local")
    parser.add_argument("--amqp-url", help="default: PACHYDERM_BENCH_AMQP_URL, local")
    parser.add_argument("--json-out", type=Path, help="also write the timers JSON here")
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    sizes = QUICK_TIMERS if arguments.quick else TimerSizes()
    services = Services.from_environment(arguments.database_url, arguments.amqp_url)
    runs = pachyderm.run(measure(1 if arguments.quick else arguments.runs, sizes, services))
    shown = ["--runs", str(len(runs))] + (["--quick"] if arguments.quick else [])
    data = as_json(runs, shlex.join(["python", "-m", "bench.timers", *shown]))
    if not arguments.quick:
        write(KEY, SECTION, data, markdown(data, sizes))
    if arguments.json_out is not None:
        arguments.json_out.write_text(json.dumps(data, indent=2) + "\n")
    for name in METRICS:
        say(f"{name}: {data[name]:,.2f}")
    return 0 if correct(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
