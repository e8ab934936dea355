"""Timers under a worker SIGKILL: reminders set timers due a few seconds later (and
cancel some) while a worker dies with timers of its partitions pending; every
timer then resolves exactly once (one ring, or one cancel), none rings early,
and none is left in the store."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from chaos.run import Services

from .scenario import CI_OPTIONS, assert_survives

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.mark.parametrize("fault", ["kill_anywhere", "kill_before_fire", "kill_after_fire"])
async def test_every_timer_fires_once_and_never_early_across_a_worker_kill(
    fault: str, tmp_path: Path, shared_services: Services
) -> None:
    options = replace(CI_OPTIONS, timer_share=0.4)
    verdict = await assert_survives(tmp_path, shared_services, [fault], options=options)
    events = Counter(event.name for event in verdict.stored.events)
    print(f"\ntimers: {events['Reminded']} set, {events['Rang']} rang, {events['Forgot']} forgot")
    assert verdict.violations.timer_violations() == 0
    assert events["Rang"] > 100, "too few timers rang to exercise the failover"
    assert events["Forgot"] > 0, "no timer was cancelled"
    assert events["Rang"] + events["Forgot"] == events["Reminded"]
    assert verdict.stored.timers == 0
