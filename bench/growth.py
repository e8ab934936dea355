"""The storage-growth benchmark: commit rate and cold load with many stored command ids
and events, against the same measures on an empty store.

    python -m bench.growth [--runs 3] [--rows N] [--quick] [--json-out PATH]

Each run, in a namespace of its own on the machine's PostgreSQL, through the event
store a worker commits and loads with (``PostgresEventStore``; no broker):

- empty: the measures on a freshly migrated namespace;
- filled: ``--rows`` command ids (default 10,000,000) and as many events are
  inserted server-side (``INSERT ... SELECT generate_series``: through commits it
  would take hours): entities of 10 events each, one command id per event, the
  events in the log of their partition (16), recorded over the last 6 days (inside
  the 7-day command window, so none is prunable), then ``VACUUM (ANALYZE)`` and
  ``CHECKPOINT``; then the measures again.

The measures: commit rate, changes per second of 4 committers each committing
batches of 32 changes (one event and one new command id each, as a worker's
batches do) to entities of their own; cold load, the median time of loading an
entity of 50 events (no snapshot) that the worker does not hold, as the store gives
it (``load``), over 200 entities written just before. The targets (issue 16): with
the rows stored, within 20% of the empty store's figures.

Medians over the runs go under the key ``growth`` of bench/results.json and into the
"Storage growth" section of bench/results.md; ``--quick`` (tiny sizes, one run)
writes neither. The namespace is dropped after each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

import pachyderm
from pachyderm.store import Change, NewEvent, PostgresEventStore

from .config import Services
from .run import say
from .standalone import Target, medians, write

KEY = "growth"
SECTION = "## Storage growth"
METRICS = (
    "commit_per_s_empty",
    "commit_per_s_filled",
    "commit_ratio",
    "cold_load_ms_empty",
    "cold_load_ms_filled",
    "cold_load_ratio",
)
TARGETS: dict[str, Target] = {"commit_ratio": (">=", 0.8), "cold_load_ratio": ("<=", 1.2)}
PARTITIONS = 16
EVENTS_EACH = 10  # events (and command ids) of each filled entity


@dataclass(frozen=True)
class Sizes:
    rows: int = 10_000_000  # command ids, and events, stored
    committers: int = 4
    batch: int = 32
    batches: int = 400  # per committer, per measure
    loaded: int = 200  # entities cold-loaded per measure
    history: int = 50  # events of each


QUICK = Sizes(rows=20_000, batches=10, loaded=10)
EVENT = NewEvent("Increased", b"\x81\xa6amount\x01")


@dataclass(frozen=True)
class GrowthRun:
    rows: int
    commit_per_s_empty: float
    commit_per_s_filled: float
    commit_ratio: float
    cold_load_ms_empty: float
    cold_load_ms_filled: float
    cold_load_ratio: float
    fill_s: float
    commands_mb: float
    events_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ref() -> pachyderm.Ref:
    return pachyderm.Ref("counter", uuid.uuid4())


async def commit_rate(store: PostgresEventStore, sizes: Sizes) -> float:
    """Changes per second of ``committers`` concurrent committers, each ``batches``
    batches of ``batch`` changes to its own entities (one event, a new command id)."""

    async def committer(partition: int) -> None:
        # Each its own partition, as each of a worker's partitions commits its batches.
        refs = [_ref() for _ in range(sizes.batch)]
        for version in range(sizes.batches):
            await store.commit(
                [
                    Change(ref, version, uuid.uuid4().hex, (EVENT,), b"r", partition=partition)
                    for ref in refs
                ]
            )

    started = time.perf_counter()
    await asyncio.gather(*(committer(partition) for partition in range(sizes.committers)))
    elapsed = time.perf_counter() - started
    return sizes.committers * sizes.batches * sizes.batch / elapsed


async def cold_load_ms(store: PostgresEventStore, sizes: Sizes) -> float:
    """Median ms of loading an entity of ``history`` events the caller does not hold."""
    refs = [_ref() for _ in range(sizes.loaded)]
    for start in range(0, len(refs), 50):
        group = refs[start : start + 50]
        await store.commit(
            [Change(ref, 0, "seed", (EVENT,) * sizes.history, b"r") for ref in group]
        )
    timings = []
    for ref in refs:
        started = time.perf_counter()
        loaded = await store.load(ref)
        timings.append((time.perf_counter() - started) * 1000)
        assert loaded.version == sizes.history
    return statistics.median(timings)


def fill_statements(entities: int) -> list[str]:
    """The SQL that stores ``entities`` entities of EVENTS_EACH events and command ids.

    Entity ``i`` is in partition ``i % 16``, the ``i / 16``-th filled there: its events
    take the log positions after the partition's head and the entities before it."""
    # md5 of a number, as a uuid: deterministic, spread over the key space as real ids.
    entity = "md5('growth-' || i)::uuid"
    heads = (
        f"(SELECT p, coalesce(h.position, 0) AS base FROM generate_series(0, {PARTITIONS} - 1) p"
        " LEFT JOIN log_heads h ON h.partition = p) heads"
    )
    series = f"generate_series(0, {entities} - 1) i"
    events = f"generate_series(1, {EVENTS_EACH}) v"
    return [
        f"INSERT INTO entities (entity_id, entity_type, version)"
        f" SELECT {entity}, 'counter', {EVENTS_EACH} FROM {series}",
        f"INSERT INTO events (entity_id, version, name, data, command_id, recorded_at)"
        f" SELECT {entity}, v, 'Increased', '\\x81a6616d6f756e7401'::bytea, 'fill-' || v,"
        f" now() - make_interval(secs => (i % 518400)) FROM {series}, {events}",
        f"INSERT INTO commands (entity_id, command_id, version, reply, recorded_at)"
        f" SELECT {entity}, 'fill-' || v, v, '\\x00'::bytea,"
        f" now() - make_interval(secs => (i % 518400)) FROM {series}, {events}",
        f"INSERT INTO event_log (partition, position, entity_id, version)"
        f" SELECT p, base + (i / {PARTITIONS}) * {EVENTS_EACH} + v, {entity}, v"
        f" FROM {series}, {events}, {heads} WHERE p = i % {PARTITIONS}",
        f"INSERT INTO log_heads (partition, position)"
        f" SELECT p, count(*) * {EVENTS_EACH} FROM"
        f" (SELECT i % {PARTITIONS} AS p FROM {series}) s GROUP BY p"
        f" ON CONFLICT (partition) DO UPDATE SET position = log_heads.position"
        f" + excluded.position",
    ]


async def fill(dsn: str, namespace: str, rows: int) -> float:
    """Store ``rows`` command ids and events; seconds taken (vacuum and checkpoint too)."""
    connection = await asyncpg.connect(dsn, server_settings={"search_path": namespace})
    started = time.perf_counter()
    try:
        for statement in fill_statements(rows // EVENTS_EACH):
            await connection.execute(statement)
        # The filled tables only: other namespaces may share the database.
        await connection.execute("VACUUM (ANALYZE) entities, events, commands, event_log")
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def table_mb(dsn: str, namespace: str, table: str) -> float:
    connection = await asyncpg.connect(dsn, server_settings={"search_path": namespace})
    try:
        size = await connection.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
    finally:
        await connection.close()
    return int(size) / 1e6


async def growth_run(services: Services, sizes: Sizes) -> GrowthRun:
    namespace = f"bench_growth_{uuid.uuid4().hex[:8]}"
    store = await PostgresEventStore.connect(services.dsn, schema=namespace, max_size=8)
    try:
        await store.migrate()
        # Warm up first (connections, plans, the functions' caches): else the empty
        # store's figures would pay for what the filled store's find ready.
        await commit_rate(store, QUICK)
        await cold_load_ms(store, QUICK)
        say("  empty store: commit rate, cold load")
        commit_empty = await commit_rate(store, sizes)
        load_empty = await cold_load_ms(store, sizes)
        say(f"  storing {sizes.rows:,} command ids and events")
        fill_s = await fill(services.dsn, namespace, sizes.rows)
        say(f"  stored in {fill_s:.0f} s; filled store: commit rate, cold load")
        commit_filled = await commit_rate(store, sizes)
        load_filled = await cold_load_ms(store, sizes)
        return GrowthRun(
            rows=sizes.rows,
            commit_per_s_empty=commit_empty,
            commit_per_s_filled=commit_filled,
            commit_ratio=commit_filled / commit_empty,
            cold_load_ms_empty=load_empty,
            cold_load_ms_filled=load_filled,
            cold_load_ratio=load_filled / load_empty,
            fill_s=fill_s,
            commands_mb=await table_mb(services.dsn, namespace, "commands"),
            events_mb=await table_mb(services.dsn, namespace, "events"),
        )
    finally:
        await store.drop_namespace()
        await store.close()


async def measure(runs: int, sizes: Sizes, services: Services) -> list[GrowthRun]:
    found = []
    for run in range(runs):
        say(f"growth run {run + 1}/{runs}")
        found.append(await growth_run(services, sizes))
    return found


def markdown(data: dict[str, Any], sizes: Sizes, note: str) -> str:
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
    fill_s = statistics.median(run["fill_s"] for run in runs)
    commands_mb = statistics.median(run["commands_mb"] for run in runs)
    events_mb = statistics.median(run["events_mb"] for run in runs)
    return f"""{SECTION}

`{data["command"]}` ({len(runs)} runs; medians, min to max). The event store a worker
uses (`PostgresEventStore`, no broker) on this machine's PostgreSQL, a namespace per
run, measured empty and then with {sizes.rows:,} command ids and {sizes.rows:,} events
stored.{note}

| Measure | Median | Runs | Target |
|---|---|---|---|
{row("commit rate, empty store", "commit_per_s_empty", " changes/s")}
{row(f"commit rate, {sizes.rows:,} rows stored", "commit_per_s_filled", " changes/s")}
{row("commit rate, stored / empty", "commit_ratio", "", 3)}
{row("cold load of 50 events, empty store", "cold_load_ms_empty", " ms", 2)}
{row(f"cold load of 50 events, {sizes.rows:,} rows stored", "cold_load_ms_filled", " ms", 2)}
{row("cold load, stored / empty", "cold_load_ratio", "", 3)}

- commit rate: {sizes.committers} committers at once, each {sizes.batches} batches of
  {sizes.batch} changes (one event and a new command id each: the commit function looks
  each id up in `commands` and inserts it) to {sizes.batch} entities of its own.
- cold load: {sizes.loaded} entities of {sizes.history} events (no snapshot) written just
  before, each loaded once as a worker loads an entity it does not hold; median.
- stored rows: entities of {EVENTS_EACH} events, one command id per event, recorded over
  the last 6 days (inside the command window, none prunable), every event in its
  partition's log, inserted with `INSERT ... SELECT generate_series` then
  `VACUUM (ANALYZE)` and `CHECKPOINT` ({fill_s:.0f} s); `commands` then took
  {commands_mb:,.0f} MB with its indexes, `events` {events_mb:,.0f} MB.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs to take medians of (3)")
    parser.add_argument("--rows", type=int, default=Sizes.rows, help="command ids and events")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run, no files")
    parser.add_argument("--database-url", help="default: PACHYDERM_BENCH_DATABASE_URL, local")
    parser.add_argument("--note", default="", help="a sentence for the results page")
    parser.add_argument("--json-out", type=Path, help="also write the growth JSON here")
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    sizes = QUICK if arguments.quick else Sizes(rows=arguments.rows)
    services = Services.from_environment(arguments.database_url)
    runs = pachyderm.run(measure(1 if arguments.quick else arguments.runs, sizes, services))
    shown = ["--runs", str(len(runs))]
    shown += ["--quick"] if arguments.quick else ["--rows", str(sizes.rows)]
    data = as_json(runs, shlex.join(["python", "-m", "bench.growth", *shown]))
    if not arguments.quick:
        note = f" {arguments.note}" if arguments.note else ""
        write(KEY, SECTION, data, markdown(data, sizes, note))
    if arguments.json_out is not None:
        arguments.json_out.write_text(json.dumps(data, indent=2) + "\n")
    for name in METRICS:
        say(f"{name}: {data[name]:,.3f}")
    return 0


def as_json(runs: list[GrowthRun], command: str) -> dict[str, Any]:
    return medians([run.as_dict() for run in runs], METRICS, TARGETS, command)


if __name__ == "__main__":
    sys.exit(main())
