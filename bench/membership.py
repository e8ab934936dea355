"""The fleet membership simulation (pachyderm/fleet/_simulation.py), as a benchmark.

    python -m bench.membership [--sizes 10,100,1000] [--seed 1] [--quick] [--json-out PATH]

For each fleet size, the same changes (a cold start within a second, ten quiet
seconds, one joining, leaving, dying, a tenth joining and dying at once, a rolling
restart a tenth at a time) on 1,024 partitions, with the membership as it was
(``BEFORE``: members counted as soon as live, three queries a heartbeat) and as it
is (``AFTER``: members settle, one query a heartbeat); and the worst start of the
former (a second worker 0.3 s after the first). Virtual time: the figures depend
on the seed, not on the machine. Beside them, the time :func:`~pachyderm.fleet.assign`
takes on this machine (real time), cold and for one change of a warm fleet.

The figures go under ``scale`` -> ``simulation`` of bench/results.json (every other
key, ``scale``'s others too, kept) and into the section "Scale: fleet membership
simulation" of bench/results.md; ``--quick`` (10 workers only) writes neither.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pachyderm.fleet import assign
from pachyderm.fleet._assignment import _owners, _preferences, _shares
from pachyderm.fleet._simulation import (
    AFTER,
    BEFORE,
    FleetSimulation,
    Timing,
    scenario,
    second_worker_joins,
)

from .run import say
from .standalone import write

KEY = ("scale", "simulation")
SECTION = "## Scale: fleet membership simulation"
PARTITIONS = 1024
TIMINGS: dict[str, Timing] = {"before": BEFORE, "after": AFTER}


def simulate(sizes: Sequence[int], seed: int) -> dict[str, Any]:
    """Every size through the standard changes, before and after; the two-worker start."""
    began = time.perf_counter()
    by_size: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for workers in sizes:
        by_size[str(workers)] = {}
        for name, timing in TIMINGS.items():
            started = time.perf_counter()
            phases = FleetSimulation(PARTITIONS, timing, seed=seed).run(scenario(workers))
            by_size[str(workers)][name] = [phase.as_dict() for phase in phases]
            say(f"{workers} workers, {name}: {time.perf_counter() - started:.1f} s")
    two = {
        name: FleetSimulation(PARTITIONS, timing, seed=seed).run(second_worker_joins())[0].as_dict()
        for name, timing in TIMINGS.items()
    }
    return {
        "partitions": PARTITIONS,
        "seed": seed,
        "timing": {name: asdict(timing) for name, timing in TIMINGS.items()},
        "sizes": by_size,
        "second_worker": two,
        "assignment_ms": {str(workers): assignment_ms(workers) for workers in sizes},
        "wall_s": round(time.perf_counter() - began, 1),
    }


def assignment_ms(workers: int, repeats: int = 3) -> dict[str, float]:
    """Milliseconds :func:`assign` takes for ``workers`` (median of ``repeats``): cold
    (nothing cached: a worker's first heartbeat) and for one more worker (a change)."""
    fleet = [f"worker-{n:04d}" for n in range(workers)]
    cold, change = [], []
    for repeat in range(repeats):
        for cache in (_owners, _preferences, _shares):
            cache.cache_clear()
        started = time.perf_counter()
        assign(PARTITIONS, fleet)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        assign(PARTITIONS, [*fleet, f"newcomer-{repeat}"])
        change.append(time.perf_counter() - started)
    return {
        "cold": round(statistics.median(cold) * 1000, 1),
        "change": round(statistics.median(change) * 1000, 1),
    }


# -- the results page -----------------------------------------------------------------

_COLUMNS = (
    ("moves", "moves (needed)", "{:,}"),
    ("settle_s", "settled after", "{:.2f} s"),
    ("max_unowned_s", "longest unowned", "{:.2f} s"),
    ("max_doubled_s", "longest doubled", "{:.2f} s"),
    ("doubled_partition_s", "doubled, partition-s", "{:,.1f}"),
)


def _pair(before: dict[str, Any], after: dict[str, Any], key: str, form: str) -> str:
    shown = f"{form.format(before[key])} → {form.format(after[key])}"
    if key == "moves":
        shown += f" ({after['needed']:,})"
    return shown


def size_table(workers: str, runs: dict[str, list[dict[str, Any]]]) -> str:
    head = "| change | " + " | ".join(title for _, title, _ in _COLUMNS) + " |"
    lines = [f"### {int(workers):,} workers, before → after", "", head]
    lines.append("|---" * (len(_COLUMNS) + 1) + "|")
    for before, after in zip(runs["before"], runs["after"], strict=True):
        cells = [_pair(before, after, key, form) for key, _, form in _COLUMNS]
        lines.append(f"| {after['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_table(data: dict[str, Any]) -> str:
    lines = [
        "| workers | queries/s before → after | entries read/s before → after"
        " | assign, cold | assign, one change |",
        "|---|---|---|---|---|",
    ]
    for workers, runs in data["sizes"].items():
        before, after = runs["before"][1], runs["after"][1]  # the steady phase
        timing = data["assignment_ms"][workers]
        lines.append(
            f"| {int(workers):,} | {before['queries_per_s']:,.0f} → {after['queries_per_s']:,.0f}"
            f" | {before['entries_per_s']:,.0f} → {after['entries_per_s']:,.0f}"
            f" | {timing['cold']:,.1f} ms | {timing['change']:,.1f} ms |"
        )
    return "\n".join(lines)


def section(data: dict[str, Any], command: str) -> str:
    two = data["second_worker"]
    timing = data["timing"]["after"]
    parts = [
        SECTION,
        "",
        f"`{command}` (seed {data['seed']}; virtual time, so the figures do not depend on"
        f" the machine; {data['wall_s']:.0f} s of real time). The membership's real code"
        f" (`LeasedMembership`, `assign`, settling) for every simulated worker, on an"
        f" in-memory store (the PostgreSQL store's contract suite) with"
        f" {timing['latency'] * 1000:.0f} ms a query, {data['partitions']:,} partitions,"
        f" heartbeat {timing['heartbeat_interval']} s, dead after {timing['dead_after']} s."
        " Before: members counted as soon as live, three queries a heartbeat (renew, prune,"
        " list). After: members settle (`join_delay` = `dead_after`: counted at the end of"
        " the window after their start), one query a heartbeat (renew and list), pruning"
        " every 20th.",
        "",
        "- moves: partitions some worker started to hold (each hand-over is one); needed:"
        " partitions whose owner differs between the assignments before and after.",
        "- settled after: from the change until holdings last changed (every partition then"
        " has one holder, as `assign` says, and nothing moves in the quiet time after);"
        " longest unowned / doubled: the longest time one partition had no holder / two.",
        f"- The worst start before: a second worker 0.3 s after the first,"
        f" {two['before']['moves']:,} moves (the first takes all, hands half over) and"
        f" {two['before']['doubled_partition_s']:,.1f} partition-seconds held twice; after,"
        f" {two['after']['moves']:,} and {two['after']['doubled_partition_s']:,.1f}, every"
        f" partition waiting {two['after']['settle_s']:.2f} s for the fleet to settle.",
        "",
        load_table(data),
        "",
        "Database load in the quiet ten seconds (queries, and rows plus live-member entries"
        " returned, per second); `assign` on this machine, real time (the previous code sorted"
        " every pair on every change: 5.0 s at 1,000 workers, 0.57 s at 100).",
    ]
    for workers, runs in data["sizes"].items():
        parts += ["", size_table(workers, runs)]
    return "\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.membership", description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000", help="fleet sizes, comma-separated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="10 workers only, no files")
    parser.add_argument("--json-out", type=Path, help="also write the simulation's JSON here")
    arguments = parser.parse_args(argv)
    sizes = [10] if arguments.quick else [int(size) for size in arguments.sizes.split(",")]
    data = simulate(sizes, arguments.seed)
    shown = ["--quick"] if arguments.quick else ["--sizes", arguments.sizes]
    command = shlex.join(["python", "-m", "bench.membership", *shown, "--seed", str(data["seed"])])
    data["command"] = command
    if arguments.json_out:
        arguments.json_out.write_text(json.dumps(data, indent=2) + "\n")
    if not arguments.quick:
        write(KEY, SECTION, data, section(data, command))
    print(section(data, command))
    late = [
        (size, name, phase["name"])
        for size, runs in data["sizes"].items()
        for name, phases in runs.items()
        for phase in phases
        if phase["late_moves"]
    ]
    if late:
        print(f"partitions moved after the fleet had settled: {late}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
