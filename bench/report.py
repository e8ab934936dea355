"""bench/results.md: the page a person reads, and bench/results.json beside it."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import HERE
from .cpu import (
    BROKER,
    CLIENT,
    CLIENT_WAITING,
    MACHINE,
    POSTGRES,
    POSTGRES_BACKGROUND,
    WORKERS,
    WORKERS_KERNEL,
    WORKERS_WAITING,
)
from .notes import top_entries, why_missed
from .profiling import Profile
from .results import PACHYDERM_1_WORKER, ProfiledRun, Results, Spread
from .systems import NAIVE_WORKER, PACHYDERM, RAW_BROKER

SYSTEMS = [PACHYDERM, RAW_BROKER, NAIVE_WORKER]
TOP_FUNCTIONS = 15
Format = Callable[[float], str]

WHAT = """\
All workloads run against this machine's real RabbitMQ and PostgreSQL, durable
(`synchronous_commit=on`, persistent messages on quorum queues, publisher
confirms), with one client process (this one, on uvloop: the same for all
three systems) and the worker processes on
the same 2 cores as the broker and the database. 16 partitions; two worker
processes named w1 and w2 split them the same way for all three systems.

- **pachyderm**: `python -m pachyderm worker bench.app:APP` (examples/counter.py
  without its effect; batched and group commits, hot cache, uvloop, default settings).
- **raw_broker** (`bench/baselines/raw_broker.py`): plain aio-pika on asyncio's own
  loop, one message at a time per partition, state in a dict, no database: the
  message path's limit as a textbook aio-pika program reaches it.
- **naive_worker** (`bench/baselines/naive_worker.py`): the same AMQP loop with one
  PostgreSQL transaction per command (`SELECT ... FOR UPDATE`, `UPDATE`,
  `INSERT` the event); no batching, no cache, no idempotency, no outbox.

Workloads:

1. RPC: 1,000 counters x 20 random increments, interleaved, seeded, 256
   calls in flight through `pachyderm.Client`, then the correctness check.
2. Sequential: 2,000 calls one at a time.
3. Drain: 100,000 commands (10,000 counters x 10) published fire-and-forget
   before the workers start; commands over the seconds from starting the
   worker processes until the last is committed.
4. Failover: SIGKILL one of two workers under load (64 calls in flight);
   seconds until 256 probe commands sent right after the kill are all committed.
5. Cold load: `store.load` + fold of one counter; with snapshots the latest
   one is 99 events behind the head, the worst the default
   `PACHYDERM_SNAPSHOT_EVERY=100` leaves.
6. Memory: one worker's resident set with 100,000 counters cached, above its
   resident set after a warm-up.
"""


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float) -> str:
    return f"{value:,.2f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def _cell(figures: Spread | None, format_: Format) -> str:
    if figures is None:
        return "-"
    return f"{format_(figures['median'])} ({format_(figures['min'])} - {format_(figures['max'])})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    aligned = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(aligned) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _targets(results: Results) -> list[str]:
    rows = []
    for target in results.targets():
        if target.value is None:
            verdict, value = "not measured", "-"
        else:
            verdict = "met" if target.met else "**missed**"
            value = f"{target.value:,.2f}{target.unit}"
        rows.append([target.name, value, target.wanted, verdict])
    return _table(["target (medians)", "measured", "wanted", ""], rows)


def _balanced(values: list[float | None]) -> str:
    return ", ".join("after the end" if value is None else f"{value:.1f}" for value in values)


def _throughput(results: Results) -> list[str]:
    rpc, latency = results.throughput(), results.latency()
    lines = _table(
        ["system", "RPC commands/s", "RPC p50 ms", "RPC p99 ms"],
        [
            [
                name,
                _cell(rpc.get(name), _rate),
                _cell(latency.get(name, {}).get("rpc_p50"), _ms),
                _cell(latency.get(name, {}).get("rpc_p99"), _ms),
            ]
            for name in SYSTEMS
            if name in rpc
        ],
    )
    drain, steady = results.drain(), results.drain_steady()
    balanced = results.drain_balanced_after()
    if drain:
        lines += [
            "### Drain (fleet capacity)",
            "",
            *_table(
                [
                    "system",
                    "commands/s from process start",
                    "steady, 10% to 90%",
                    "s until every partition was served (per run)",
                ],
                [
                    [
                        name,
                        _cell(drain[name], _rate),
                        _cell(steady[name], _rate),
                        _balanced(balanced[name]),
                    ]
                    for name in [*SYSTEMS, PACHYDERM_1_WORKER]
                    if name in drain
                ],
            ),
        ]
    ratios = results.ratios()
    if ratios:
        lines += [
            "Ratios are taken within each run (the median of the per-run ratios, as the",
            "targets are), so on a noisy machine they can differ from the ratio of the medians.",
            "",
        ]
        lines += _table(
            ["pachyderm vs", "ratio within each run"],
            [[name, _cell(ratio, _ratio)] for name, ratio in ratios.items()],
        )
    return lines


def _latency(results: Results) -> list[str]:
    latency = results.latency()
    rows = [
        [name, _cell(lat.get("sequential_p50"), _ms), _cell(lat.get("sequential_p99"), _ms)]
        for name, lat in latency.items()
        if "sequential_p50" in lat
    ]
    for setup, commit in results.commit_latency().items():
        rows.append(
            [
                f"(a one-change commit alone: {setup})",
                _cell(commit["p50_ms"], _ms),
                _cell(commit["p99_ms"], _ms),
            ]
        )
    return _table(["system", "p50 ms", "p99 ms"], rows)


def _others(results: Results) -> list[str]:
    lines = []
    collected = results.collected
    if collected.failover_s:
        trials = ", ".join(f"{value:.2f}" for value in collected.failover_s)
        lines += [
            "### Failover",
            "",
            f"Seconds until the killed worker's partitions committed again: "
            f"{_cell(results.as_json()['spread']['failover_s'], _ms)} over "
            f"{len(collected.failover_s)} trial(s) ({trials}).",
            "",
        ]
    cold = results.cold_load()
    if cold:
        lines += ["### Cold load", ""]
        lines += _table(
            ["history", "ms to load and fold"],
            [[_history(label), _cell(figures, _ms)] for label, figures in cold.items()],
        )
    memory = results.memory()
    if memory:
        lines += [
            "### Memory",
            "",
            f"Worker resident set with {collected.memory[0].entities:,} counters cached: "
            f"{_cell(memory['loaded_rss_mib'], _ms)} MiB, after warm-up "
            f"{_cell(memory['idle_rss_mib'], _ms)} MiB: "
            f"**{_cell(memory['bytes_per_entity'], _rate)} bytes per cached counter**.",
        ]
        if collected.cache_bytes_per_entity is not None:
            lines += [
                f"Of that, the cache's own structures (reference, UUID, entry, state dict,"
                f" LRU links; tracemalloc in-process) are "
                f"{collected.cache_bytes_per_entity:,.0f} bytes; the rest is allocator slack"
                " and the worker's own bookkeeping.",
            ]
        lines += [""]
    return lines


def _history(label: str) -> str:
    events, _, snapshot = label.partition("_")
    return f"{int(events):,} events" + (", with snapshots" if snapshot else "")


CPU_COMPONENTS = [CLIENT, WORKERS, BROKER, POSTGRES, POSTGRES_BACKGROUND]
KERNEL = "kernel (system calls: sockets, epoll)"
ALL = "**all**"


def _cpu_rows(cpu: dict[str, dict[str, float]]) -> list[list[str]]:
    rows = []
    for name, parts in cpu.items():
        ours = sum(parts[c] for c in CPU_COMPONENTS)
        rows.append(
            [
                name,
                f"{parts[CLIENT]:.3f}",
                f"{parts[WORKERS]:.3f} ({parts[WORKERS_KERNEL]:.3f})",
                *(f"{parts[c]:.3f}" for c in CPU_COMPONENTS[2:]),
                f"**{ours:.3f}**",
                f"{parts[MACHINE] - ours:.3f}",
                f"{parts[CLIENT_WAITING]:.3f}",
                f"{parts[WORKERS_WAITING]:.3f}",
            ]
        )
    return rows


CPU_HEADER = [
    "system",
    CLIENT,
    "workers (of which kernel)",
    *CPU_COMPONENTS[2:],
    "sum",
    "other tenants",
    CLIENT_WAITING,
    WORKERS_WAITING,
]


def _cpu(results: Results) -> list[str]:
    cpu, drain = results.cpu(), results.drain_cpu()
    if not cpu and not drain:
        return []
    lines = [
        "## CPU per command, by component",
        "",
        "CPU-milliseconds per command (= CPU-seconds per 1,000 commands), medians over the",
        "runs, from `/proc/<pid>/stat` around the workload. The broker and the database's",
        "background processes serve everyone on this machine; `other tenants` is CPU the",
        "machine spent outside these processes meanwhile. The last two columns are not CPU:",
        "milliseconds per command that the client and the workers were ready to run but",
        "waited for a core (`/proc/<pid>/schedstat`). With 2 cores the sum bounds",
        "throughput at about 2,000 / sum commands per second.",
        "",
    ]
    if cpu:
        lines += ["RPC workload:", "", *_table(CPU_HEADER, _cpu_rows(cpu))]
    if drain:
        lines += ["Drain (the client only polls):", "", *_table(CPU_HEADER, _cpu_rows(drain))]
    return lines


def _profile_table(profile: Profile, counter_name: str, top: int) -> list[str]:
    counter = getattr(profile, counter_name)
    return _table(
        ["", "share of samples"],
        [[f"`{name}`", f"{share:.1%}"] for name, share in profile.share(counter, top)],
    )


def _components(profiled: dict[str, ProfiledRun]) -> list[str]:
    """Workers' CPU per command by component, side by side for the profiled systems."""
    names = [name for name, run in profiled.items() if "workers" in run.profiles]
    rows: dict[str, list[str]] = {}
    for column, name in enumerate(names):
        run = profiled[name]
        workers = run.profiles["workers"]
        kernel = run.cpu_per_1000.get(WORKERS_KERNEL, 0.0)
        python = run.cpu_per_1000.get(WORKERS, 0.0) - kernel
        for component, share in workers.share(workers.components, 40):
            row = rows.setdefault(component, ["-"] * len(names))
            row[column] = f"{share * python:.3f} ({share:.0%})"
        rows.setdefault(KERNEL, ["-"] * len(names))[column] = f"{kernel:.3f}"
        total = rows.setdefault(ALL, ["-"] * len(names))
        total[column] = f"**{python + kernel:.3f}**"
    # Python's components by the first system's cost, then the kernel, then the sum.
    ordered = sorted(rows, key=lambda component: (component in (KERNEL, ALL), component == ALL))
    return _table(
        ["component", *(f"{name} workers: CPU-ms/command (share)" for name in names)],
        [[component, *rows[component]] for component in ordered],
    )


def _profiles(results: Results) -> list[str]:
    profiled = results.collected.profiles
    if not profiled:
        return []
    lines = [
        "## Profile of the hot path",
        "",
        "py-spy (`--gil --nonblocking`, 100 Hz) on both workers and the client during one",
        "more RPC workload per system (not one of the timed runs). Only samples in which",
        "the process runs Python code (holds the GIL) count: on this saturated machine a",
        "sample taken while a process waits for a core would otherwise land in whatever",
        "system call woke someone else (mostly `socket.send`). Components go by the file",
        "of the innermost Python frame (C code such as msgpack counts for its caller).",
        "CPU-ms per command: the component's share of the samples times the workers'",
        "user CPU per command in that run; the kernel row is their system CPU.",
        "",
        *_components(profiled),
    ]
    for name, run in profiled.items():
        for part, profile in run.profiles.items():
            lines += [
                f"### {name} {part}: top functions by own time",
                "",
                f"{profile.samples:,} samples in {run.elapsed_s:.1f} s.",
                "",
                *_profile_table(profile, "self_time", TOP_FUNCTIONS),
            ]
        workers = run.profiles.get("workers")
        if name == PACHYDERM and workers is not None:
            lines += [
                f"### {name} workers: Pachyderm functions by inclusive time",
                "",
                *_table(
                    ["", "share of samples (inclusive)"],
                    [
                        [f"`{function}`", f"{share:.1%}"]
                        for function, share in workers.share(workers.inclusive, 300)
                        if "(pachyderm/" in function and "cli/" not in function
                    ][: TOP_FUNCTIONS * 2],
                ),
            ]
    return lines


def _correctness(results: Results) -> list[str]:
    lines = ["## Correctness (RPC workload)", ""]
    for name, runs in results.collected.correctness.items():
        last = runs[-1]
        histories = last["histories_checked"]
        verdict = "all exact" if all(run["ok"] for run in runs) else "**FAILED**"
        lines.append(
            f"- {name}: {verdict} in {len(runs)} run(s): {last['replies_checked']:,} replies,"
            f" {last['final_states_checked']:,} final states"
            + (" (no histories kept)" if histories is None else f", {histories:,} histories")
            + " checked per run."
        )
        for run in runs:
            for problem in run["first_problems"]:
                lines.append(f"  - {problem}")
    return [*lines, ""]


def _machine(machine: dict[str, Any]) -> list[str]:
    fsync = machine["disk_fsync"]
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    return [
        "## Machine",
        "",
        f"- CPU: {machine['cpu']}; memory {machine['memory_gib']} GiB; kernel {machine['kernel']}",
        f"- Python {machine['python']}; {packages}",
        f"- PostgreSQL {machine['postgresql']}",
        f"- {machine['rabbitmq']}",
        f"- Disk fsync rate: **{fsync['ops_per_s']:,} per second** ({fsync['how']}, in"
        f" {fsync['where']})",
        f"- Load average when the benchmark started: {machine['load_average_at_start']}",
        "",
    ]


def markdown(results: Results) -> str:
    collected = results.collected
    lines = [
        "# Benchmarks: Pachyderm beside the broker's limit and the naive design",
        "",
        f"Command: `{results.command}`  ",
        f"Written {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; medians of"
        f" {collected.runs} run(s), (min - max) beside them.",
        "",
        WHAT,
        "## Targets",
        "",
        *_targets(results),
        *why_missed(results),
        "## Throughput and latency",
        "",
        *_throughput(results),
        "### Sequential calls (one at a time)",
        "",
        *_latency(results),
        *_others(results),
        *_cpu(results),
        *_profiles(results),
        *top_entries(results),
        *_correctness(results),
        *_machine(results.machine),
    ]
    return "\n".join(lines).rstrip() + "\n"


def write(results: Results) -> tuple[Path, Path]:
    """The main run's keys and page; the keys and sections of the benchmarks run on
    their own (``python -m bench.timers`` and the like) are kept as they were."""
    data, page = HERE / "results.json", HERE / "results.md"
    found = json.loads(data.read_text()) if data.exists() else {}
    data.write_text(json.dumps({**found, **results.as_json()}, indent=2) + "\n")
    written = markdown(results)
    existing = page.read_text() if page.exists() else ""
    page.write_text(written + kept_sections(existing, written))
    return page, data


# Every section the main run's page may have (some only with profiles, say): one of
# these the run did not write this time is dropped, not kept stale.
MAIN_SECTIONS = frozenset(
    {
        "## Targets",
        "## Throughput and latency",
        "## CPU per command, by component",
        "## Profile of the hot path",
        "## Correctness (RPC workload)",
        "## Machine",
    }
)


def kept_sections(existing: str, written: str) -> str:
    """The ``## `` sections of ``existing`` that are not the main run's, in order."""
    headings = MAIN_SECTIONS | set(re.findall(r"^## .*$", written, re.MULTILINE))
    sections = re.split(r"(?=^## )", existing, flags=re.MULTILINE)
    kept = [s for s in sections if s.startswith("## ") and s.splitlines()[0] not in headings]
    return "".join("\n" + section.rstrip("\n") + "\n" for section in kept)
