"""Poison commands in the chaos load: a handler that hangs its worker and one that kills
it, each quarantined after its attempts and skipped by the run's operator, and a timer
whose command kills its worker, held after its tries, while the rest of the load goes
on: no quarantine violation (no healthy request held up past the run's bound, every
poison timer held), nothing else. The long run (``python -m chaos``) adds every fault."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chaos.app import CRASH_EXIT, TIMER_POISON
from chaos.checker import poisons
from chaos.record import QUARANTINED
from chaos.run import Services, chaos_run
from pachyderm.worker._watchdog import EXIT_STALLED

from .scenario import CI_OPTIONS, describe_unanswered

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.rabbitmq]

# A few poisons (hangs, crashes and poison timers in turn) in 1,200 commands, a short
# handler budget, three workers (each poison command takes one down with its first
# attempt, the others die in forked children of the next owner; so does a poison timer:
# its first try takes a worker down, the later ones end children).
OPTIONS = dataclasses.replace(
    CI_OPTIONS, workers=3, poison_share=0.003, handler_budget=4.0, rate=100.0
)


async def test_poison_commands_are_quarantined_without_a_violation(
    tmp_path: Path, shared_services: Services
) -> None:
    async with chaos_run(tmp_path, shared_services, OPTIONS) as run:
        await run.setup()
        await run.scenario(1_200, [])
        verdict = await run.finish()
        logs = run.fleet.logs()
        exits = run.fleet.exits()
        assert run.operator is not None
        skipped = len(run.operator.skipped)
    sent = poisons(run.record)
    assert {request.command for request in sent} == {"Hang", "Crash"}
    timers = [request for request in run.record if request.command == TIMER_POISON]
    assert timers
    assert verdict.violations.clean, f"{verdict.violations.describe()}\n{logs}"
    assert verdict.unanswered == 0, f"{describe_unanswered(run.record)}\n{logs}"
    assert verdict.settled
    # Each poison quarantined (its caller told so), then skipped; workers it took down.
    assert all(QUARANTINED in request.outcomes() for request in sent)
    assert skipped == len(sent)
    # Each first delivery took a worker down once at most (unless it died unrun with a
    # worker another took down): redelivered, its attempts die in forked children. A
    # caller's retry is published anew, a first delivery again, unsuspected.
    # A poison timer: the worker that fires it first (its later tries die in children).
    bound = sum(len(request.attempts) for request in sent) + len(timers)
    assert len(exits) <= bound, exits
    assert set(exits) <= {CRASH_EXIT, EXIT_STALLED}
