"""What the fence at commit for parked entities costs (migration 0017): one-change
commits through ``pachyderm_commit_fenced``, which the store calls, against
``pachyderm_commit_batch`` (0016), which it wraps, alternating.

    python -m bench.fence [--runs 5] [--rounds 6] [--commits 1000] [--quick] [--json-out PATH]

Each run works in a fresh PostgreSQL namespace on this machine (removed after):
it warms up, then alternates rounds of ``--commits`` one-change commits (one small
event each, to 200 counters in turn, as a sequential caller's commit is), the
unfenced function first in each pair; a run's figure is the median of its rounds,
in microseconds a commit, and the ratio of the two within the run. With no
quarantine row for the batch's entities, the fence is one index probe after the
commit's own work.

Results go under the key ``fence`` of bench/results.json and the section "The
fence's cost" of bench/results.md; ``--quick`` (tiny sizes, no files) is the
smoke test (``--json-out``: the run's JSON there too).
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
from pathlib import Path
from typing import Any

import asyncpg

from pachyderm import Ref
from pachyderm.store import Change, NewEvent, PostgresEventStore
from pachyderm.store._postgres import commit_arguments

from .config import Services
from .run import say
from .standalone import medians, write

KEY = "fence"
SECTION = "## The fence's cost"
FUNCTIONS = {"unfenced": "pachyderm_commit_batch", "fenced": "pachyderm_commit_fenced"}
METRICS = ("unfenced_us", "fenced_us", "ratio")
ENTITIES = 200


def _statement(function: str) -> str:
    marks = ", ".join(f"${n}" for n in range(1, 29))
    return f"SELECT outcome, version, reply FROM {function}({marks})"


class Commits:
    """One-change commits to counters in turn, each at its entity's next version, on a
    connection set up as the store's are (``enable_seqscan`` and ``jit`` off)."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        self.refs = [Ref.from_key("counter", str(n)) for n in range(ENTITIES)]
        self.versions = dict.fromkeys(self.refs, 0)
        self.sent = 0

    async def round(self, function: str, count: int) -> float:
        """``count`` commits through ``function``; microseconds a commit."""
        statement = _statement(function)
        started = time.perf_counter()
        for _ in range(count):
            ref = self.refs[self.sent % ENTITIES]
            self.sent += 1
            change = Change(ref, self.versions[ref], f"c{self.sent}", [NewEvent("added", b"1")])
            [row] = await self.connection.fetch(statement, *commit_arguments([change]))
            assert row["outcome"] == "c", row
            self.versions[ref] += 1
        return (time.perf_counter() - started) / count * 1e6


async def one_run(dsn: str, rounds: int, commits: int) -> dict[str, Any]:
    namespace = f"bench_fence_{uuid.uuid4().hex[:10]}"
    store = await PostgresEventStore.connect(dsn, schema=namespace, max_size=1)
    try:
        await store.migrate()
        settings = {"search_path": namespace, "enable_seqscan": "off", "jit": "off"}
        connection = await asyncpg.connect(dsn, server_settings=settings)
        try:
            taken = await _rounds(Commits(connection), rounds, commits)
        finally:
            await connection.close()
    finally:
        await store.drop_namespace()
        await store.close()
    unfenced, fenced = (statistics.median(taken[name]) for name in FUNCTIONS)
    return {"unfenced_us": unfenced, "fenced_us": fenced, "ratio": fenced / unfenced}


async def _rounds(load: Commits, rounds: int, commits: int) -> dict[str, list[float]]:
    for function in FUNCTIONS.values():  # warm: plans cached, the first rows written
        await load.round(function, commits)
    taken: dict[str, list[float]] = {name: [] for name in FUNCTIONS}
    for _ in range(rounds):
        for name, function in FUNCTIONS.items():
            taken[name].append(await load.round(function, commits))
    return taken


def markdown(data: dict[str, Any]) -> str:
    spread, runs = data["spread"], data["runs"]

    def row(label: str, name: str, digits: int) -> str:
        s = spread[name]
        return (
            f"| {label} | {s['median']:,.{digits}f} |"
            f" {s['min']:,.{digits}f} to {s['max']:,.{digits}f} |"
        )

    return f"""{SECTION}

`{data["command"]}` ({len(runs)} runs; medians, min to max). One-change commits
(one small event, as a sequential call's) through the function the store calls,
`pachyderm_commit_fenced` (migration 0017: the commit, then the check that none of
the batch's entities is parked behind a quarantined command), against the function
it wraps, `pachyderm_commit_batch`, in alternating rounds within each run; no
quarantine row for these entities, as in a healthy fleet.

| Measure | Median | Runs |
|---|---|---|
{row("unfenced, us a commit", "unfenced_us", 1)}
{row("fenced, us a commit", "fenced_us", 1)}
{row("fenced / unfenced", "ratio", 3)}
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fence", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs to take medians of (5)")
    parser.add_argument("--rounds", type=int, default=6, help="pairs of rounds a run (6)")
    parser.add_argument("--commits", type=int, default=1000, help="commits a round (1000)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run, no files")
    parser.add_argument("--database-url", help="default: PACHYDERM_BENCH_DATABASE_URL, local")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    runs, rounds, commits = (
        (1, 1, 20) if arguments.quick else (arguments.runs, arguments.rounds, arguments.commits)
    )
    dsn = Services.from_environment(arguments.database_url).dsn
    rows = []
    for run in range(runs):
        say(f"fence run {run + 1}/{runs}")
        rows.append(asyncio.run(one_run(dsn, rounds, commits)))
    shown = ["--runs", str(runs), "--rounds", str(rounds), "--commits", str(commits)]
    command = shlex.join(["python", "-m", "bench.fence", *shown])
    data = medians(rows, METRICS, {}, command)
    if not arguments.quick:
        write(KEY, SECTION, data, markdown(data))
    if arguments.json_out is not None:
        arguments.json_out.write_text(json.dumps(data, indent=2) + "\n")
    for name in METRICS:
        say(f"{name}: {data[name]:,.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
