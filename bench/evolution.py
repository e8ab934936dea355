"""The schema evolution benchmark: what upcasting costs a cold load, and how fast
``replay-check`` reads stored histories.

    python -m bench.evolution [--runs 3] [--quick] [--json-out PATH]

- cold load: one entity of 1,000 events in PostgreSQL, loaded as a worker loads an
  entity it has no state for (``EntityType.load``: the store's load, then decode
  and fold; no snapshot). The same stored bytes (``Credited`` at schema version 1)
  are read by two entity types: ``plain_ledger``, whose ``Credited`` is still at
  version 1, and ``upcast_ledger``, whose ``Credited`` is at version 3, reached
  through a chain of two upcasters (a field renamed, then one added).
- replay-check: ``pachyderm.testing.replay_check`` over a namespace of upcast
  ledgers (each with a snapshot to compare with), events checked per second.

Medians over the runs go under the key ``evolution`` of bench/results.json (the
other keys are kept) and into the "Schema evolution" section of bench/results.md;
``--quick`` (tiny sizes, one run) writes neither. Exits 1 if a replay check found
a problem or the two ledgers folded to different balances.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import pachyderm
from pachyderm import App, Entity, HandleResult, Ref, upcaster
from pachyderm.store import Change, NewEvent, PostgresEventStore
from pachyderm.testing import replay_check

from .config import Services
from .run import say
from .standalone import Target, medians, write

KEY = "evolution"
SECTION = "## Schema evolution"
METRICS = ("cold_load_upcast_ms", "cold_load_plain_ms", "replay_check_events_per_s")
# Beside them, in the same runs: decode and fold alone, without the database.
FOLD_METRICS = ("decode_fold_upcast_ms", "decode_fold_plain_ms")
TARGETS: dict[str, Target] = {}


@dataclass(frozen=True)
class Sizes:
    history: int = 1_000  # events of the cold-loaded entity
    loads: int = 30  # cold loads of each entity per run (their median is the run's)
    entities: int = 1_000  # ledgers replay-checked
    events_each: int = 50  # events of each


QUICK = Sizes(history=100, loads=3, entities=20, events_each=10)


# -- the two ledgers: the same stored events, read at version 1 and at version 3 ------

Balance = dict[str, int]


@dataclass(frozen=True)
class Credited:
    """Version 1, as stored."""

    amount: int


@dataclass(frozen=True)
class CreditedInCents:
    """Version 3 of ``Credited``: ``amount`` renamed ``cents`` (2), a ``currency`` (3)."""

    schema_version: ClassVar[int] = 3
    cents: int
    currency: str


@upcaster(CreditedInCents, 1)
def cents_was_amount(data: dict[str, Any]) -> dict[str, Any]:
    return {"cents": data["amount"]}


@upcaster(CreditedInCents, 2)
def currency_added(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "currency": "EUR"}


class PlainLedger(Entity[Balance]):
    events = MappingProxyType({"Credited": Credited})

    def init(self) -> Balance:
        return {"balance": 0}

    def handle(self, message: Any, state: Balance) -> HandleResult:
        return None

    def update(self, event: Any, state: Balance) -> Balance:
        return {"balance": state["balance"] + event.amount}


class UpcastLedger(Entity[Balance]):
    events = MappingProxyType({"Credited": CreditedInCents})
    upcasters = (cents_was_amount, currency_added)

    def init(self) -> Balance:
        return {"balance": 0}

    def handle(self, message: Any, state: Balance) -> HandleResult:
        return None

    def update(self, event: Any, state: Balance) -> Balance:
        return {"balance": state["balance"] + event.cents}


APP = App([PlainLedger, UpcastLedger])
CHUNK = 100  # events per change, changes per commit


def stored_events(count: int, start: int = 0) -> list[NewEvent]:
    """``count`` events as version 1 stored them (``Credited`` at schema version 1)."""
    plain = APP.entity_type("plain_ledger")
    return [plain.encode_event(Credited(amount=1 + (start + n) % 97)) for n in range(count)]


async def commit_history(store: PostgresEventStore, ref: Ref, events: list[NewEvent]) -> None:
    for start in range(0, len(events), CHUNK):
        change = Change(ref, start, uuid.uuid4().hex, events[start : start + CHUNK])
        await store.commit([change])


async def seed_ledgers(store: PostgresEventStore, sizes: Sizes) -> None:
    """``sizes.entities`` upcast ledgers, each its events and a snapshot at its end
    taken by the current code (so replay-check compares every one)."""
    upcast = APP.entity_type("upcast_ledger")
    changes = []
    for number in range(sizes.entities):
        events = stored_events(sizes.events_each, number)
        seen = (e for n in events for e in upcast.decode_events(n.name, n.data, n.schema_version))
        state = upcast.evolve(upcast.initial_state(), seen)
        snapshot = upcast.snapshot(len(events), state)
        ref = Ref("upcast_ledger", uuid.uuid4())
        changes.append(Change(ref, 0, "seed", events, snapshot=snapshot))
        if len(changes) == CHUNK:
            await store.commit(changes)
            changes = []
    if changes:
        await store.commit(changes)


# -- measuring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EvolutionRun:
    cold_load_upcast_ms: float
    cold_load_plain_ms: float
    decode_fold_upcast_ms: float
    decode_fold_plain_ms: float
    replay_check_events_per_s: float
    replay_check_events: int
    replay_check_seconds: float
    balance: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ColdLoads:
    """Median ms of each ledger's cold load, and of its decode and fold alone."""

    upcast_ms: float
    plain_ms: float
    fold_upcast_ms: float
    fold_plain_ms: float
    agree: bool


async def cold_loads(store: PostgresEventStore, sizes: Sizes) -> ColdLoads:
    """Each ledger loaded cold ``sizes.loads`` times, alternating; then the same loaded
    history decoded and folded alone (no database), to show the upcasters' own part."""
    events = stored_events(sizes.history)
    names = ("upcast_ledger", "plain_ledger")
    refs = {name: Ref(name, uuid.uuid4()) for name in names}
    for ref in refs.values():
        await commit_history(store, ref, events)
    loads: dict[str, list[float]] = {name: [] for name in names}
    folds: dict[str, list[float]] = {name: [] for name in names}
    states: dict[str, Any] = {}
    for _ in range(sizes.loads):
        for name, ref in refs.items():
            entity_type = APP.entity_type(name)
            started = time.perf_counter()
            loaded = await entity_type.load(store, ref)
            loads[name].append((time.perf_counter() - started) * 1000)
            states[name] = loaded.state
    for name, ref in refs.items():
        entity_type, history = APP.entity_type(name), await store.load(ref)
        for _ in range(sizes.loads):
            started = time.perf_counter()
            entity_type.replay(history)
            folds[name].append((time.perf_counter() - started) * 1000)
    load_ms = {name: statistics.median(loads[name]) for name in names}
    fold_ms = {name: statistics.median(folds[name]) for name in names}
    return ColdLoads(
        upcast_ms=load_ms["upcast_ledger"],
        plain_ms=load_ms["plain_ledger"],
        fold_upcast_ms=fold_ms["upcast_ledger"],
        fold_plain_ms=fold_ms["plain_ledger"],
        agree=states["plain_ledger"] == states["upcast_ledger"],
    )


async def one_run(services: Services, sizes: Sizes) -> tuple[EvolutionRun, bool]:
    namespace = f"pachyderm_bench_evolution_{uuid.uuid4().hex[:8]}"
    # The pool pachyderm replay-check opens (open_store: the default size).
    store = await PostgresEventStore.connect(services.dsn, schema=namespace)
    try:
        await store.migrate()
        cold = await cold_loads(store, sizes)
        await seed_ledgers(store, sizes)
        report = await replay_check(APP, store, types=["upcast_ledger"])
    finally:
        await store.drop_namespace()
        await store.close()
    run = EvolutionRun(
        cold_load_upcast_ms=round(cold.upcast_ms, 3),
        cold_load_plain_ms=round(cold.plain_ms, 3),
        decode_fold_upcast_ms=round(cold.fold_upcast_ms, 3),
        decode_fold_plain_ms=round(cold.fold_plain_ms, 3),
        replay_check_events_per_s=round(report.events_per_s, 1),
        replay_check_events=report.events,
        replay_check_seconds=round(report.seconds, 3),
        balance=sum(1 + n % 97 for n in range(sizes.history)),
    )
    # The cold-loaded upcast ledger is checked too.
    expected = sizes.entities * sizes.events_each + sizes.history
    checks = {
        "the ledgers fold to one balance": cold.agree,
        "no replay problem": report.ok,
        f"{expected} events checked": report.events == expected,
    }
    for failed in (what for what, held in checks.items() if not held):
        say(f"  FAILED: {failed}")
    return run, all(checks.values())


async def measure(runs: int, sizes: Sizes, services: Services) -> tuple[list[EvolutionRun], bool]:
    found, correct = [], True
    for number in range(runs):
        say(f"evolution run {number + 1}/{runs}")
        run, ok = await one_run(services, sizes)
        say(
            f"  cold load {run.cold_load_upcast_ms:.2f} ms upcast, {run.cold_load_plain_ms:.2f}"
            f" ms plain; replay-check {run.replay_check_events_per_s:,.0f} events/s"
        )
        found.append(run)
        correct = correct and ok
    return found, correct


def markdown(data: dict[str, Any], sizes: Sizes) -> str:
    spread = data["spread"]

    def row(label: str, name: str, unit: str) -> str:
        figures = spread[name]
        places = 0 if unit.endswith("/s") else 2
        median, low, high = (f"{figures[k]:,.{places}f}" for k in ("median", "min", "max"))
        return f"| {label} | {median}{unit} | {low} to {high} |"

    cost = data["cold_load_upcast_ms"] - data["cold_load_plain_ms"]
    fold_cost = data["decode_fold_upcast_ms"] - data["decode_fold_plain_ms"]
    per_event_us = fold_cost * 1000 / sizes.history
    return f"""{SECTION}

`{data["command"]}` ({len(data["runs"])} runs; medians, min to max). This machine's
PostgreSQL, one namespace per run, dropped afterwards.

| Measure | Median | Runs |
|---|---|---|
{row(f"cold load, {sizes.history:,} events, two-step upcaster chain", "cold_load_upcast_ms", " ms")}
{row(f"cold load, the same {sizes.history:,} events, no upcasting", "cold_load_plain_ms", " ms")}
{row(f"decode and fold alone, {sizes.history:,} events, upcast", "decode_fold_upcast_ms", " ms")}
{row(f"decode and fold alone, {sizes.history:,} events, plain", "decode_fold_plain_ms", " ms")}
{row("replay-check from PostgreSQL", "replay_check_events_per_s", " events/s")}

- cold load: `EntityType.load` of one entity with no snapshot, as a worker loads an
  entity it holds no state for: the store's load (one query for the events), then
  decode and fold. Both entity types read the same stored bytes (`Credited` at
  schema version 1, `{{"amount": n}}`); `upcast_ledger`'s `Credited` is at version 3,
  reached by two upcasters (`amount` renamed `cents`, then `currency` added), so each
  event goes through both before pydantic validates it. Each run takes the median of
  {sizes.loads} loads of each, alternating: the chain adds {cost:,.2f} ms to a cold
  load ({cost / data["cold_load_plain_ms"]:+.0%}). Decode and fold alone
  (`EntityType.replay` of the loaded history, {sizes.loads} times each, no database)
  put the upcasters' own cost at {fold_cost:,.2f} ms, {per_event_us:,.1f} µs an event:
  each step is a Python call on a copy of the stored dict, before pydantic validates
  the result. A snapshot bounds it: only the events after the last snapshot are
  decoded on a cold load (at most `PACHYDERM_SNAPSHOT_EVERY`, 100 by default).
- replay-check: `pachyderm.testing.replay_check(app, store)` over {sizes.entities:,}
  `upcast_ledger` entities of {sizes.events_each} events each, each with a snapshot at
  its last event (and the cold-loaded one, without), every event upcast through the
  chain, each snapshot compared with the fold:
  listing a page of entities, loading each entity's snapshot and events (two queries
  an entity), decoding, upcasting, folding, comparing. The rate is events over the
  whole check's time.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.evolution", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs to take medians of (3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run, no files")
    parser.add_argument("--database-url", help="default: PACHYDERM_BENCH_DATABASE_URL, local")
    parser.add_argument("--json-out", type=pathlib.Path, help="also write the evolution JSON here")
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    sizes = QUICK if arguments.quick else Sizes()
    services = Services.from_environment(arguments.database_url)
    runs, correct = pachyderm.run(
        measure(1 if arguments.quick else arguments.runs, sizes, services)
    )
    shown = ["--runs", str(len(runs))] + (["--quick"] if arguments.quick else [])
    command = shlex.join(["python", "-m", "bench.evolution", *shown])
    data = medians([run.as_dict() for run in runs], METRICS + FOLD_METRICS, TARGETS, command)
    if not arguments.quick:
        write(KEY, SECTION, data, markdown(data, sizes))
    if arguments.json_out is not None:
        arguments.json_out.write_text(json.dumps(data, indent=2) + "\n")
    for name in METRICS:
        say(f"{name}: {data[name]:,.2f}")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
