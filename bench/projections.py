"""The projections benchmark (bench/workloads/projections.py), on its own.

    python -m bench.projections [--runs 3] [--quick] [--json-out PATH]

Medians over the runs go under the key ``projections`` of bench/results.json
(the other keys are kept) and into the "Projections" section of
bench/results.md (the rest of the page is kept); ``--quick`` (tiny sizes, one
run) writes neither. The log's cost is a ratio within each run (both halves on
the same fleet, back to back), then its median. Exits 1 if a call failed or a
read model differs from the log.
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
from .fleet import summary
from .run import _cancel_once, say
from .standalone import Target, medians, write
from .workloads.projections import (
    QUICK_PROJECTIONS,
    ProjectionSizes,
    ProjectionsRun,
    projections_run,
)

KEY = "projections"
SECTION = "## Projections"
METRICS = (
    "catch_up_per_s",
    "lag_p50_ms",
    "lag_p99_ms",
    "rpc_with_log_per_s",
    "rpc_without_log_per_s",
    "log_cost",
)
TARGETS: dict[str, Target] = {
    "catch_up_per_s": (">=", 20_000.0),
    "lag_p99_ms": ("<=", 100.0),
    "log_cost": ("<=", 0.10),
}


async def measure(runs: int, sizes: ProjectionSizes, services: Services) -> list[ProjectionsRun]:
    # SIGTERM unwinds like in bench/run.py: processes stopped, namespaces removed.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _cancel_once, main_task)
    found = []
    with tempfile.TemporaryDirectory(prefix="pachyderm-bench-projections-") as scratch:
        for run in range(runs):
            say(f"projections run {run + 1}/{runs}")
            folder = Path(scratch) / str(run)
            folder.mkdir()
            found.append(
                await projections_run(services, folder, sizes, run, lambda m: say("  " + m))
            )
    return found


def as_json(runs: list[ProjectionsRun], command: str) -> dict[str, Any]:
    return medians([run.as_dict() for run in runs], METRICS, TARGETS, command)


def correct(runs: list[ProjectionsRun]) -> bool:
    return all(run.errors == 0 and run.read_model_correct for run in runs)


def markdown(data: dict[str, Any], sizes: ProjectionSizes) -> str:
    spread = data["spread"]

    def row(label: str, name: str, unit: str, scale: float = 1.0) -> str:
        figures = {key: value * scale for key, value in spread[name].items()}
        target = data["targets"].get(name)
        wanted = "-"
        if target:
            bound = target["target"]
            shown = f"{bound[:3]}{float(bound[3:]) * scale:g}{unit}"
            wanted = f"{shown} ({'met' if target['met'] else 'MISSED'})"
        return (
            f"| {label} | {figures['median']:,.1f}{unit} | {figures['min']:,.1f} to"
            f" {figures['max']:,.1f} | {wanted} |"
        )

    runs = data["runs"]
    caught = min(run["caught_up_events"] for run in runs)
    stored = summary([run["store_per_s"] for run in runs])["median"]
    calls = sizes.rpc_entities * sizes.rpc_increments
    during = summary([run["rpc_during_lag_per_s"] for run in runs])["median"]
    first = summary([run["lag_with_first_seconds_p99_ms"] for run in runs])["median"]
    cpu = summary([run["projections_cpu_share_during_lag"] for run in runs])["median"]
    loads = ", ".join(f"{run['load_average_at_start'][0]:.1f}" for run in runs)
    return f"""{SECTION}

`{data["command"]}` ({len(runs)} runs; medians, min to max). Two worker processes
serving `bench.projection_app:APP` (the benchmark's counter, and `CounterTotals`: a
`PostgresProjection` keeping each counter's total with one upsert per batch through
`apply_many`, and in the same statement one row per event saying when it was applied),
16 partitions, one `pachyderm projections` process, this machine's RabbitMQ and PostgreSQL.

| Measure | Median | Runs | Target |
|---|---|---|---|
{row(f"catch-up over {caught:,}+ stored events", "catch_up_per_s", "/s")}
{row("live lag p50, commit to read model, RPC running", "lag_p50_ms", " ms")}
{row("live lag p99, commit to read model, RPC running", "lag_p99_ms", " ms")}
{row("RPC with the log (positions assigned)", "rpc_with_log_per_s", "/s")}
{row("RPC without the log", "rpc_without_log_per_s", "/s")}
{row("the log's cost (1 - with / without, per run)", "log_cost", " %", 100.0)}

- catch-up: {sizes.catch_up_events:,} events stored straight through the store's `commit`
  ({sizes.changes_per_commit} changes of {sizes.events_per_change} `Increased` events per commit,
  {sizes.committers} committers, the changes' partitions spread over all 16; median
  {stored:,.0f} events/s), not through the broker, beside the RPC workload's events;
  then the projection process starts. Rate: the events applied over the seconds from
  its first applied batch to its last.
- live lag: the RPC workload ({calls:,} calls, {sizes.in_flight} in flight) with the
  projection caught up and running; per event, the `clock_timestamp()` of the statement
  that applied it (just before its transaction commits) minus its `recorded_at` (the
  start of the transaction that committed it, so the lag includes that commit), for the
  events committed after the workload's first {sizes.settling_s:g} s (left out as in the runs
  before the runners were woken by NOTIFY, when idle runners polled every second or so;
  counting those too, p99 is {first:,.0f} ms). The RPC
  workload meanwhile: {during:,.0f} calls/s (median; {data["rpc_with_log_per_s"]:,.0f} with no
  projection running), the projection process using {cpu:.0%} of a core (its 16 runners
  woken by the log's NOTIFY, polling every 20 ms at most while events keep coming).
- the log's cost: the RPC workload ({calls:,} calls, {sizes.in_flight} in flight, no
  projection running) as the product commits, and in the same namespace with
  `pachyderm_commit_batch` (the commit function) replaced, in that namespace's schema
  only (`CREATE OR REPLACE`, the product's code untouched), by its own definition with
  the log's step cut out (no positions, no log rows), and the log's heads taken out (the
  one-change statement of migration 0018, which writes the log itself, then leaves every
  commit to the function); then the original and the heads are restored.
  On one fleet, back to back, in two rounds A B B A of half the workload each
  (which comes first alternates between runs); a run's rate is the mean of its four, its
  cost 1 - with / without.
- this 2-core machine is shared: load average (1 min) at the start of each run {loads}.
- every run checks the read model: one applied row per event of the log, each counter's
  total the sum of its events' amounts.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.projections", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs to take medians of (3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run, no files")
    parser.add_argument("--database-url", help="default: PACHYDERM_BENCH_DATABASE_URL, local")
    parser.add_argument("--amqp-url", help="default: PACHYDERM_BENCH_AMQP_URL, local")
    parser.add_argument("--json-out", type=Path, help="also write the projections JSON here")
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    sizes = QUICK_PROJECTIONS if arguments.quick else ProjectionSizes()
    services = Services.from_environment(arguments.database_url, arguments.amqp_url)
    runs = pachyderm.run(measure(1 if arguments.quick else arguments.runs, sizes, services))
    shown = ["--runs", str(len(runs))] + (["--quick"] if arguments.quick else [])
    data = as_json(runs, shlex.join(["python", "-m", "bench.projections", *shown]))
    if not arguments.quick:
        write(KEY, SECTION, data, markdown(data, sizes))
    if arguments.json_out is not None:
        arguments.json_out.write_text(json.dumps(data, indent=2) + "\n")
    for name in METRICS:
        say(f"{name}: {data[name]:,.3f}")
    return 0 if correct(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
