"""Store commit throughput: batches of 1 and of 100 commands, PostgreSQL and SQLite.

    python -m bench.store_commit [--runs 5] [--quick]

Each command is one change with one small event, its command id and reply,
as the worker commits them. Every run works in a fresh namespace (PostgreSQL
schema or SQLite file) that is removed afterwards. Writes
``bench/store_commit.md`` and ``bench/store_commit.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from pachyderm import Ref
from pachyderm.store import (
    Change,
    Committed,
    EventStore,
    NewEvent,
    PostgresEventStore,
    SqliteEventStore,
)

HERE = Path(__file__).parent
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
EVENT = NewEvent("Increased", b"\x81\xa6amount\x01")


@dataclass(frozen=True)
class Workload:
    name: str
    batch_size: int
    committers: int
    commands: int


WORKLOADS = [
    Workload("batch of 1, one committer", 1, 1, 2_000),
    Workload("batch of 1, 8 concurrent committers", 1, 8, 4_000),
    Workload("batch of 100, one committer", 100, 1, 20_000),
]


def change(ref: Ref, version: int) -> Change:
    return Change(ref, version, str(uuid.uuid4()), [EVENT], b"\x81\xa5count\x01")


async def committer(store: EventStore, workload: Workload, share: int) -> None:
    refs = [Ref("counter", uuid.uuid4()) for _ in range(workload.batch_size)]
    versions = dict.fromkeys(refs, 0)
    for _ in range(share // workload.batch_size):
        outcomes = await store.commit([change(ref, versions[ref]) for ref in refs])
        for ref, outcome in zip(refs, outcomes, strict=True):
            assert isinstance(outcome, Committed), outcome
            versions[ref] = outcome.version


async def measure(store: EventStore, workload: Workload) -> float:
    """Commands per second committed by ``workload`` on ``store``."""
    share = workload.commands // workload.committers
    started = time.perf_counter()
    await asyncio.gather(*(committer(store, workload, share) for _ in range(workload.committers)))
    return share * workload.committers / (time.perf_counter() - started)


async def with_postgres(dsn: str, work: Callable[[EventStore], Awaitable[float]]) -> float:
    store = await PostgresEventStore.connect(
        dsn, schema=f"bench_{uuid.uuid4().hex[:10]}", max_size=8
    )
    try:
        await store.migrate()
        return await work(store)
    finally:
        await store.drop_namespace()
        await store.close()


async def with_sqlite(work: Callable[[EventStore], Awaitable[float]]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        store = await SqliteEventStore.open(Path(folder) / "bench.db")
        try:
            await store.migrate()
            return await work(store)
        finally:
            await store.close()


async def machine(dsn: str) -> dict[str, str]:
    connection = await asyncpg.connect(dsn)
    try:
        version = await connection.fetchval("SHOW server_version")
        sync = await connection.fetchval("SHOW synchronous_commit")
        fsync = await connection.fetchval("SHOW fsync")
    finally:
        await connection.close()
    return {
        "cpu": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "python": sys.version.split()[0],
        "postgresql": f"{version} (synchronous_commit={sync}, fsync={fsync})",
        "sqlite": f"{sqlite3.sqlite_version} (WAL, synchronous=FULL)",
    }


async def run(runs: int, scale: float, dsn: str) -> dict[str, object]:
    results: dict[str, dict[str, dict[str, float]]] = {}
    for backend in ("postgresql", "sqlite"):
        for base in WORKLOADS:
            workload = Workload(
                base.name, base.batch_size, base.committers, int(base.commands * scale)
            )
            samples = []
            work = functools.partial(measure, workload=workload)
            for number in range(runs):
                rate = await (
                    with_postgres(dsn, work) if backend == "postgresql" else with_sqlite(work)
                )
                samples.append(rate)
                progress = f"run {number + 1}/{runs}: {rate:>9,.0f} commands/s"
                print(f"{backend:<10} {workload.name:<38} {progress}")
            results.setdefault(backend, {})[workload.name] = {
                "median": statistics.median(samples),
                "min": min(samples),
                "max": max(samples),
            }
    return {"commands_per_s": results, "machine": await machine(dsn), "runs": runs}


def write(report: dict[str, object], command: str) -> None:
    (HERE / "store_commit.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Store commit throughput",
        "",
        f"Command: `{command}`",
        "",
        "Each command: one change with one event, its command id and reply, committed",
        "durably through the store port. Commands per second; median of "
        f"{report['runs']} runs (min - max).",
        "",
        "| backend | workload | median | min - max |",
        "|---|---|---:|---:|",
    ]
    results = report["commands_per_s"]
    assert isinstance(results, dict)
    for backend, workloads in results.items():
        for name, figures in workloads.items():
            lines.append(
                f"| {backend} | {name} | {figures['median']:,.0f} | "
                f"{figures['min']:,.0f} - {figures['max']:,.0f} |"
            )
    machine_info = report["machine"]
    assert isinstance(machine_info, dict)
    lines += ["", "Machine:", ""] + [f"- {key}: {value}" for key, value in machine_info.items()]
    (HERE / "store_commit.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a tenth of the work, no files")
    arguments = parser.parse_args()
    dsn = os.environ.get("PACHYDERM_BENCH_DATABASE_URL", DEFAULT_DSN)
    report = asyncio.run(run(arguments.runs, 0.1 if arguments.quick else 1.0, dsn))
    if not arguments.quick:
        write(report, "python -m bench.store_commit " + " ".join(sys.argv[1:]))
        print(f"wrote {HERE / 'store_commit.md'}")


if __name__ == "__main__":
    main()
