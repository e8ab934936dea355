"""A chaos scenario at CI scale: a small load, the given faults while it runs, then the
checker's verdict, which must be spotless."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from chaos.load import Patience
from chaos.record import ENDED, Record
from chaos.run import Options, Services, Verdict, chaos_run

# Small and quick, but long enough that every fault lands on commands in flight.
COMMANDS = 1_200
CI_OPTIONS = Options(
    patience=Patience(attempt=5.0, give_up=90.0),
    recovery_limit=90.0,
    limit=150,
)


async def assert_survives(
    folder: Path,
    services: Services,
    faults: list[str],
    *,
    commands: int = COMMANDS,
    options: Options = CI_OPTIONS,
) -> Verdict:
    """Run ``faults`` (in order) under load; assert they all took effect, every caller
    got an answer, and the checker found nothing."""
    async with chaos_run(folder, services, options) as run:
        await run.setup()
        await run.scenario(commands, faults)
        verdict = await run.finish()
        logs = run.fleet.logs()
    assert not run.missed, run.missed
    assert [fault.kind for fault in run.faults] == faults
    for fault in run.faults:
        print(
            f"\n{fault.kind} at {fault.at:.1f} s ({run.record.clock(fault.at)} UTC):"
            f" {fault.detail}; recovered in {fault.recovery_s:.2f}s"
        )
    after_faults = [r for r in run.record if r.attempts[0].sent_at > run.faults[0].at]
    assert after_faults, "the load ended before the first fault"
    assert verdict.violations.clean, f"{verdict.violations.describe()}\n{verdict.queues}\n{logs}"
    assert verdict.unanswered == 0, f"{describe_unanswered(run.record)}\n{logs}"
    assert verdict.settled, "effects or commands were still on their way"
    if options.ticket_share:
        # Tickets ended under the faults and were refused after: the end was exercised.
        assert any(ENDED in request.outcomes() for request in run.record), "nothing ended"
    return verdict


def describe_unanswered(record: Record) -> str:
    """Who gave up, by caller, with the first few requests' attempts."""
    unanswered = record.unanswered()
    callers = Counter(request.caller for request in unanswered)
    lines = [f"{len(unanswered)} requests never answered: {dict(callers)}"]
    for request in unanswered[:5]:
        attempts = [(round(a.sent_at, 1), a.outcome, a.detail[:80]) for a in request.attempts]
        lines.append(f"  {request.caller} {request.command} {request.command_id}: {attempts}")
    return "\n".join(lines)
