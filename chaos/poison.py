"""What a run with poison commands adds around its fleet: a supervisor and an operator.

A poison (``chaos.app``'s ``Volatile``: ``Hang``, ``Crash``) takes its worker
down on every attempt, until it is quarantined. So, as Kubernetes would, the
:class:`Supervisor` starts a new worker as soon as one of the fleet's own is
gone (the faults' own restores still wait for balance after each fault); and
the :class:`Operator` does what ``pachyderm quarantine skip`` does for every
command it finds quarantined, ``wait`` seconds after its quarantine: skips it,
so its entity's parked commands run and their callers are answered within the
run. The checker's ``quarantine_violated`` then holds the run to it: nothing
of a poisoned entity applied between its quarantine and the skip, every poison
quarantined and never applied, nothing left parked, no healthy entity stalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pachyderm import PachydermError
from pachyderm.store import NotQuarantinedError, PostgresEventStore
from pachyderm.worker._watchdog import EXIT_STALLED

from .app import CRASH_EXIT
from .fleet import ChaosFleet

log = logging.getLogger("chaos.poison")


@dataclass
class Supervisor:
    """Keeps ``size`` of the fleet's own workers live, checking every ``every`` seconds."""

    fleet: ChaosFleet
    size: int
    every: float = 0.2
    started: int = 0

    async def run(self) -> None:
        while True:
            self.started += self.fleet.replace_dead(self.size)
            await asyncio.sleep(self.every)


@dataclass
class Operator:
    """Skips each quarantined command ``wait`` seconds after its quarantine."""

    store: PostgresEventStore
    wait: float = 1.0
    every: float = 0.5
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (entity id, command id)
    attempts: list[int] = field(default_factory=list)  # of each skipped command

    async def run(self) -> None:
        quarantine = self.store.quarantine_store()
        while True:
            await asyncio.sleep(self.every)
            try:
                rows = await quarantine.quarantined(limit=10_000)
            except PachydermError as error:  # a fault took the database away: next round
                log.info("the operator could not list the quarantine: %s", error)
                continue
            due = datetime.now(UTC) - timedelta(seconds=self.wait)
            for row in rows:
                at = row.quarantined_at
                if row.status != "quarantined" or at is None or at > due:
                    continue
                with contextlib.suppress(NotQuarantinedError, PachydermError):
                    await quarantine.decide(row.entity_id, row.command_id, "skip")
                    self.skipped.append((str(row.entity_id), row.command_id))
                    self.attempts.append(row.attempts)


def exit_figures(codes: list[int]) -> dict[str, int]:
    """Worker exits by cause: a crashing poison, a hung one (the watchdog), the rest."""
    names = {CRASH_EXIT: "crash_poison", EXIT_STALLED: "watchdog"}
    return dict(sorted(Counter(names.get(code, "other") for code in codes).items()))


def figures(operator: Operator, supervisor: Supervisor, codes: list[int]) -> dict[str, Any]:
    """What the poisons did to the run, for its results."""
    return {
        "skipped_by_operator": len(operator.skipped),
        "attempts_when_quarantined": dict(sorted(Counter(operator.attempts).items())),
        "workers_started_by_supervisor": supervisor.started,
        "worker_exits": exit_figures(codes),
    }
