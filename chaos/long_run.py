"""The long chaos run: tens of thousands of commands, dozens of faults of every kind,
and the checker's verdict over all of it.

    python -m chaos [--commands 50000] [--faults 52] [--seed 1]

Runs on a private PostgreSQL and a private RabbitMQ (started here, on
loopback, in a temporary folder; the machine's shared services are never
touched), so that they too can be crashed and restarted. Two chaos workers
(``chaos.worker``: ``pachyderm worker`` with its ports wrapped in faults) serve
``chaos.app:APP`` (the demo's entities, and reminders that set timers); the
Python client and a raw aio-pika publisher send the load, recording what they
sent and were told. Faults of every kind in
``chaos.faults`` are injected in a seeded, shuffled order, one after
the other, while the load runs, until ``--faults`` of them took effect and
``--commands`` commands were sent. No dispatcher exists during the first
``--sink-after`` faults (by default one round of every kind): effects to
handlers wait in the unrouted-effects queue while every transfer must still
be credited; then the effects sink binds its queue and has them routed again
(see ``chaos.run``). A ``--poison-share`` of the load are poison commands (a
handler that hangs its worker, one that kills it: see ``chaos.poison``),
quarantined and skipped while the load runs, with the quarantine violations
counted. Writes ``chaos/results.json`` and ``chaos/results.md``. ``--keep`` keeps
the run's folder (the workers' logs) and names it; ``--show`` sets how many
violations of each kind are described at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pachyderm import _codec as codec

from .app import POISON_TIMER
from .checker import TICKED, is_ring, poisons
from .faults import available, kinds
from .load import Patience
from .poison import figures as poison_figures
from .record import QUARANTINED, Record
from .run import ChaosRun, Options, Services, Verdict, chaos_run
from .services import PrivateServices

HERE = Path(__file__).parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "results.md"
_REFUSED_SETTLEMENT = re.compile(r"PRECONDITION_FAILED - unknown delivery tag \d+")
# quarantine.child_wait as a warning: a wait of a second or more for a child's slot.
_LONG_CHILD_WAIT = re.compile(
    r"WARNING pachyderm\.quarantine: partition \d+: a suspect batch waited"
)


def schedule(run: ChaosRun, target: int, rng: random.Random) -> Iterator[str]:
    """Fault kinds, each kind once per shuffled round, until ``target`` took effect."""
    kinds = available(run.target)
    round_: list[str] = []
    while len(run.faults) < target:
        if not round_:
            round_ = rng.sample(kinds, len(kinds))
        yield round_.pop()


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "count": len(ordered),
        "median": round(statistics.median(ordered), 2),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2),
        "max": round(ordered[-1], 2),
    }


def outcomes(record: Record) -> dict[str, int]:
    """How the requests ended: the outcome of their last attempt."""
    return dict(sorted(Counter(request.attempts[-1].outcome for request in record).items()))


def results(
    run: ChaosRun, verdict: Verdict, arguments: argparse.Namespace, seconds: float
) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = {}
    for fault in run.faults:
        by_kind.setdefault(fault.kind, []).append(fault.recovery_s)
    callers = Counter(request.caller for request in run.record)
    return {
        "commands": len(run.record),
        "faults": len(run.faults),
        "faults_by_kind": {kind: len(samples) for kind, samples in sorted(by_kind.items())},
        "violations": verdict.violations.counts(),
        "timer_violations": verdict.violations.timer_violations(),
        "quarantine_violations": verdict.violations.counts()["quarantine_violated"],
        # Of them, healthy requests answered past the stall bound or never (liveness).
        "healthy_stalls": sum(
            found.startswith("healthy ")
            for found in verdict.violations.found["quarantine_violated"]
        ),
        "poisons": poison_summary(run, verdict),
        "timers": timer_figures(verdict),
        "recovery_s": {kind: summary(samples) for kind, samples in sorted(by_kind.items())},
        "unanswered": verdict.unanswered,
        "settled": verdict.settled,
        "commands_by_caller": dict(sorted(callers.items())),
        "outcomes": outcomes(run.record),
        "attempts": sum(len(request.attempts) for request in run.record),
        "retried_after_unknown": sum(1 for request in run.record if len(request.attempts) > 1),
        "events": len(verdict.stored.events),
        "effects_committed": len(verdict.stored.outbox),
        "effects_to_entities": sum(
            row.destination.startswith("command.") for row in verdict.stored.outbox
        ),
        "effect_deliveries_seen": len(verdict.observed.effects),
        "sink_after_faults": run.options.sink_after,
        "effects_waited_for_dispatcher": run.effects_waited,
        "effects_routed_again": verdict.effects_routed_again,
        "sink_queue_at_end": verdict.sink_queue,
        "dead_letters": len(verdict.observed.dead_letters),
        "snapshots": len(verdict.stored.snapshots),
        "missed_faults": run.missed,
        # When each took effect (the workers' logs' clock, UTC), to line stalls up with.
        "faults_in_order": [
            {"kind": f.kind, "at": run.record.clock(f.at), "recovery_s": round(f.recovery_s, 1)}
            for f in run.faults
        ],
        "duration_s": round(seconds, 1),
        "seed": arguments.seed,
        "command": " ".join(["python -m chaos", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "examples": {kind: found[:5] for kind, found in verdict.violations.found.items() if found},
    }


def poison_summary(run: ChaosRun, verdict: Verdict) -> dict[str, Any]:
    """The poison commands sent, how their callers were answered, what they cost; the
    poison timers set and held; the volatile entities' ticks (none while parked)."""
    sent = poisons(run.record)
    names = Counter(event.name for event in verdict.stored.events)
    figures: dict[str, Any] = {
        "share": run.options.poison_share,
        "sent": dict(sorted(Counter(request.command for request in sent).items())),
        "callers_told_quarantined": sum(QUARANTINED in r.outcomes() for r in sent),
        "poison_timers_set": names["Deferred"],
        "poison_timers_held": sum(key == POISON_TIMER for _, key in verdict.stored.held),
        "ticks_applied": names[TICKED],
    }
    if run.operator is not None and run.supervisor is not None:
        figures |= poison_figures(run.operator, run.supervisor, run.fleet.exits())
    return figures


def timer_figures(verdict: Verdict) -> dict[str, Any]:
    """How many timers were set, rang and were cancelled; how late the rings committed."""
    names = Counter(event.name for event in verdict.stored.events)
    lateness = [
        (event.recorded_at.timestamp() - float(codec.decode(event.data)["due"])) * 1000
        for event in verdict.stored.events
        if is_ring(event) and event.recorded_at is not None
    ]
    figures: dict[str, Any] = {
        "set": names["Reminded"],
        "rang": names["Rang"],
        "cancelled": names["Forgot"],
        "pending_at_end": verdict.stored.timers,
    }
    if lateness:
        late = summary(lateness)
        figures["lateness_ms"] = {key: late[key] for key in ("median", "p90", "max")}
    return figures


def markdown(figures: dict[str, Any]) -> str:
    violations = figures["violations"]
    total = sum(violations.values())
    lines = [
        "# Chaos run",
        "",
        f"Command: `{figures['command']}` (seed {figures['seed']}, "
        f"{figures['duration_s']:.0f} s on {figures['machine']['cpus']} cores).",
        "",
        f"**{figures['commands']:,} commands, {figures['faults']} faults injected, "
        f"{total} violation{'' if total == 1 else 's'}** "
        f"({figures['unanswered']} requests left unanswered); "
        f"**{figures['timers']['set']:,} timers set, "
        f"{figures['timer_violations']} timer violations**; "
        f"**{sum(figures['poisons']['sent'].values())} poison commands,"
        f" {figures['quarantine_violations']} quarantine violations**"
        f" ({figures['healthy_stalls']} of them healthy requests stalled).",
        "",
        "Two chaos workers (`pachyderm worker` with faults at its ports, `chaos/worker.py`)",
        "serve `chaos.app:APP` (counters that mail an admin when they cross 10,",
        "bank accounts transferring money entity to entity, reminders that set timers",
        "due 0.5 to 4 s later and cancel a quarter of them soon after) on a private",
        "PostgreSQL and a private RabbitMQ. The Python client and a raw aio-pika publisher (JSON,",
        "with and without a reply) send the load and record what they sent and what",
        "they were told; a timed-out attempt is *unknown* and retried with the same",
        "command id. A durable consumer of the effects exchange records every effect;",
        f"it binds its queue only after the first {figures['sink_after_faults']} faults, as a",
        "dispatcher deployed after its handler: until then the effects to handlers",
        "wait in the unrouted-effects queue, and every transfer committed meanwhile",
        "must be credited without it; then the product routes them again.",
        "The checker (`chaos/checker.py`) then compares the record, the",
        "namespace's tables, the effects seen and a final query of every entity;",
        "each timer must resolve exactly once (one ring or one cancel), no ring may",
        "commit before the timer's due time, and no timer may be left pending",
        "(the `timer_*` rows are the timer violations).",
        f"A share of {figures['poisons']['share']:g} of the load are poison commands",
        "(`chaos.app`'s `Volatile`: `Hang` loops forever, blocking its worker's event",
        "loop until the watchdog interrupts it (or, in a forked child, until the child",
        "is killed); `Crash` calls `os._exit`), each to a",
        "volatile entity of its own, bumped before and after it; every third is a",
        "poison timer instead (`Defer` schedules a `Crash`). A supervisor starts",
        "a worker for each that goes; each poison is quarantined after 3 attempts,",
        "its entity's later bumps parked, and skipped by the run's operator a",
        "second later (`chaos/poison.py`); a poison timer is held after 3 tries.",
        "From its first bump to its last a volatile entity is ticked by a periodic",
        "timer, whose ticks wait while it is parked.",
        "`quarantine_violated` counts a poisoned",
        "entity's command applied between the quarantine and the skip, a poison",
        "applied or never quarantined, a poison timer not held at the end, a command",
        "left parked, and a healthy request answered more than 60 s after its first",
        "send, or never.",
        "",
        "## Violations",
        "",
        "| guarantee checked | violations |",
        "|---|---:|",
        *(f"| {kind} | {count} |" for kind, count in violations.items()),
        "",
        "## Faults and recovery",
        "",
        "Recovery: seconds from the moment the fault took effect until every probe",
        f"entity ({Options().probes} counters across the partitions) answered a fresh",
        "command. Dead workers are replaced only after that (with poison commands in",
        "the load, a supervisor replaces every worker as soon as it goes).",
        "",
        "| fault | injected | median s | p90 s | max s |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {kind} | {figures['faults_by_kind'][kind]} | {s['median']:.2f} |"
            f" {s['p90']:.2f} | {s['max']:.2f} |"
            for kind, s in figures["recovery_s"].items()
        ),
        "",
        "## The load",
        "",
        "| measure | value |",
        "|---|---:|",
        *(
            f"| requests by {caller} | {n:,} |"
            for caller, n in figures["commands_by_caller"].items()
        ),
        *(f"| ended {outcome} | {n:,} |" for outcome, n in figures["outcomes"].items()),
        f"| attempts | {figures['attempts']:,} |",
        f"| requests retried after an unknown attempt | {figures['retried_after_unknown']:,} |",
        f"| events committed | {figures['events']:,} |",
        f"| effects committed | {figures['effects_committed']:,} |",
        f"| of which to other entities (applied there once) | {figures['effects_to_entities']:,} |",
        f"| deliveries of the others seen by the sink | {figures['effect_deliveries_seen']:,} |",
        "| of the others, committed before the sink bound its queue"
        f" | {figures['effects_waited_for_dispatcher']:,} |",
        "| taken from the unrouted-effects queue and routed again"
        f" | {figures['effects_routed_again']:,} |",
        f"| the sink's queue at the end | {figures['sink_queue_at_end']} |",
        f"| dead letters | {figures['dead_letters']:,} |",
        "| acks and rejects the broker refused (in the workers' logs)"
        f" | {figures.get('refused_settlements', '-')} |",
        "| waits of a second or more for a child's slot (in the workers' logs)"
        f" | {figures.get('long_child_waits', '-')} |",
        f"| snapshots | {figures['snapshots']:,} |",
        *timer_rows(figures["timers"]),
        *poison_rows(figures["poisons"]),
    ]
    if figures["examples"]:
        lines += ["", "## What the checker found", ""]
        lines += [
            f"- {kind}: {example}"
            for kind, examples in figures["examples"].items()
            for example in examples
        ]
    lines += ["", "## Faults in order", "", "| took effect (UTC) | fault | recovery s |"]
    lines += ["|---|---|---:|"]
    lines += [
        f"| {fault['at']} | {fault['kind']} | {fault['recovery_s']} |"
        for fault in figures["faults_in_order"]
    ]
    if figures["missed_faults"]:
        lines += ["", "Faults that did not take effect (not counted):", ""]
        lines += [f"- {missed}" for missed in figures["missed_faults"]]
    return "\n".join(lines) + "\n"


def poison_rows(poisoned: dict[str, Any]) -> list[str]:
    sent = ", ".join(f"{n} {name}" for name, n in poisoned["sent"].items()) or "none"
    rows = [
        f"| poison commands sent | {sent} |",
        f"| of which the caller was told quarantined | {poisoned['callers_told_quarantined']} |",
        f"| poison timers set, held at the end | {poisoned.get('poison_timers_set', '-')},"
        f" {poisoned.get('poison_timers_held', '-')} |",
        f"| volatile entities' ticks applied (none while parked) |"
        f" {poisoned.get('ticks_applied', '-')} |",
    ]
    if "skipped_by_operator" in poisoned:
        attempts = ", ".join(f"{n}x {a}" for a, n in poisoned["attempts_when_quarantined"].items())
        exits = ", ".join(f"{n} {cause}" for cause, n in poisoned["worker_exits"].items())
        rows += [
            f"| quarantined, then skipped by the operator | {poisoned['skipped_by_operator']} |",
            f"| attempts when quarantined | {attempts or '-'} |",
            f"| worker exits | {exits or 'none'} |",
            f"| workers started by the supervisor | {poisoned['workers_started_by_supervisor']} |",
        ]
    return rows


def timer_rows(timers: dict[str, Any]) -> list[str]:
    rows = [
        f"| timers set | {timers['set']:,} |",
        f"| of which rang (once each) | {timers['rang']:,} |",
        f"| of which cancelled before they rang | {timers['cancelled']:,} |",
    ]
    if "lateness_ms" in timers:
        late = timers["lateness_ms"]
        rows.append(
            f"| ring committed after due, ms: median / p90 / max"
            f" | {late['median']:.1f} / {late['p90']:.1f} / {late['max']:.1f} |"
        )
    return rows


async def main(arguments: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    options = Options(
        seed=arguments.seed,
        workers=2,
        partitions=arguments.partitions,
        patience=Patience(attempt=5.0, give_up=300.0),
        rate=arguments.rate,
        sink_after=arguments.sink_after,
        timer_share=arguments.timer_share,
        poison_share=arguments.poison_share,
    )
    private = await asyncio.to_thread(PrivateServices, postgres=True, rabbitmq=True)
    try:
        assert private.postgres is not None
        assert private.rabbitmq is not None
        services = Services(private.postgres.dsn, private.rabbitmq.url, private)
        with run_folder(arguments.keep) as folder:
            async with chaos_run(folder, services, options) as run:
                await run.setup()
                faults = schedule(run, arguments.faults, random.Random(arguments.seed))
                await run.scenario(arguments.commands, faults, gap=arguments.gap)
                verdict = await run.finish(settle_timeout=120)
                if not verdict.violations.clean:
                    print(verdict.violations.describe(arguments.show), file=sys.stderr)
                figures = results(run, verdict, arguments, time.monotonic() - started)
                figures["refused_settlements"] = refused_settlements(folder)
                figures["long_child_waits"] = long_child_waits(folder)
                return figures
    finally:
        await asyncio.to_thread(private.close)


def refused_settlements(folder: Path) -> int:
    """Acks and rejects the broker refused in the workers' logs ("unknown delivery tag":
    settled twice, or covered by another's ``multiple`` ack), each closing its channel
    and returning its partition's deliveries in flight. None expected since 8157bd9."""
    # Every settlement waiting on the channel fails with the one refusal: counted once.
    return sum(
        len(set(_REFUSED_SETTLEMENT.findall(log.read_text(errors="replace"))))
        for log in folder.glob("*.log")
    )


def long_child_waits(folder: Path) -> int:
    """Suspect batches that waited a second or more for a child's slot, in the workers'
    logs: the isolation saturated (2,144 in a run before ee69e83, which holds a slot
    for the child only)."""
    return sum(
        len(_LONG_CHILD_WAIT.findall(log.read_text(errors="replace")))
        for log in folder.glob("*.log")
    )


@contextmanager
def run_folder(keep: bool) -> Iterator[Path]:
    """The run's folder (its workers' logs): removed afterwards, or kept and named."""
    if not keep:
        with tempfile.TemporaryDirectory(prefix="chaos-run-") as folder:
            yield Path(folder)
        return
    kept = Path(tempfile.mkdtemp(prefix="chaos-run-"))
    print(f"the run's folder, kept: {kept}", file=sys.stderr)
    yield kept


def entry() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=50_000, help="load commands, at least")
    parser.add_argument("--faults", type=int, default=52, help="faults that take effect")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--gap", type=float, default=2.0, help="seconds between faults")
    parser.add_argument("--rate", type=float, default=150.0, help="load commands per second")
    parser.add_argument(
        "--timer-share", type=float, default=0.1, help="share of the load that sets timers"
    )
    parser.add_argument(
        "--poison-share",
        type=float,
        default=0.0002,
        help="share of the load that are poison commands (a hang, a process exit)",
    )
    parser.add_argument(
        "--sink-after",
        type=int,
        default=len(kinds()),
        help="faults before the effects sink binds its queue (default: one of each kind)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run's folder (its workers' logs)"
    )
    parser.add_argument(
        "--show", type=int, default=5, help="violations of each kind described at the end"
    )
    arguments = parser.parse_args()
    figures = asyncio.run(main(arguments))
    RESULTS_JSON.write_text(json.dumps(figures, indent=2) + "\n")
    RESULTS_MD.write_text(markdown(figures))
    shown = ("commands", "faults", "violations", "poisons")
    print(json.dumps({k: figures[k] for k in shown}, indent=2))
