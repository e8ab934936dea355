"""Pruning: what the store keeps for a window only goes once the window has passed.

Command ids are kept ``commands`` seconds (the command window: see
:mod:`pachyderm._expiry`, which refuses commands older than it), published
outbox rows ``effects`` seconds; the quarantine's leftovers (attempt counts
by their last attempt, skipped commands by the operator's decision) the
command window too, since a copy of their command arriving after it is
refused as expired before it could need them. A run deletes each in batches of at most
``batch`` rows, oldest first, each its own short transaction, pausing
``pause`` seconds between batches so that commits are never crowded out; it
ends once a batch comes back short (nothing older is left).

In a fleet, the worker that owns partition 0 prunes, every ``interval``
seconds: one pruner at a time without a lock of its own (the fleet already
gives every partition one owner). When ownership briefly overlaps, or an
operator runs ``pachyderm prune`` meanwhile, two pruners skip the rows the
other holds (``SKIP LOCKED``): the overlap costs nothing but a little work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .._errors import PachydermError
from .._expiry import DEFAULT_RETENTION
from .._hooks import WorkerHooks
from ..store import EventStore, Retained

log = logging.getLogger("pachyderm.pruning")

DEFAULT_OUTBOX_RETENTION = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class PruneOptions:
    """What is kept how long (seconds), and how pruning paces itself."""

    commands: float = DEFAULT_RETENTION
    effects: float = DEFAULT_OUTBOX_RETENTION
    batch: int = 1000
    pause: float = 0.1
    interval: float = 300.0
    """Seconds between a worker's runs (0: a worker never prunes)."""

    def retention(self) -> Mapping[Retained, float]:
        return {
            "commands": self.commands,
            "effects": self.effects,
            "attempts": self.commands,
            "quarantine": self.commands,
        }


class Pruner:
    """Deletes what is older than its window from ``store``, a bounded batch at a time."""

    def __init__(
        self,
        store: EventStore,
        options: PruneOptions | None = None,
        *,
        hooks: WorkerHooks | None = None,
    ) -> None:
        self.store = store
        self.options = options or PruneOptions()
        self.hooks = hooks or WorkerHooks()

    async def prunable(self) -> dict[Retained, int]:
        """How many rows a run would delete now (``pachyderm prune --dry-run``)."""
        return {
            retained: await self.store.count_prunable(retained, older_than)
            for retained, older_than in self.options.retention().items()
        }

    async def run(self) -> dict[Retained, int]:
        """Delete everything past its window, a batch at a time; how many rows went."""
        pruned: dict[Retained, int] = {}
        for retained, older_than in self.options.retention().items():
            pruned[retained] = await self._prune(retained, older_than)
        if any(pruned.values()):
            log.info("pruned %s", ", ".join(f"{n} {what}" for what, n in pruned.items()))
        return pruned

    async def _prune(self, retained: Retained, older_than: float) -> int:
        total = 0
        while True:
            deleted = await self.store.prune(retained, older_than, self.options.batch)
            if deleted:
                total += deleted
                self.hooks.pruned(retained, deleted)
            if deleted < self.options.batch:
                return total
            await asyncio.sleep(self.options.pause)

    async def run_forever(self, mine: Callable[[], bool]) -> None:
        """Every ``interval`` seconds, run if ``mine()`` (this worker owns partition 0).
        A failed run is logged and tried again at the next interval."""
        if self.options.interval <= 0:
            return
        while True:
            await asyncio.sleep(self.options.interval)
            if not mine():
                continue
            try:
                await self.run()
            except PachydermError as error:
                log.warning("pruning failed, trying again in %ss: %s", self.options.interval, error)
            except Exception:
                # Whatever it was, the store must not grow for good because of it.
                log.exception("pruning failed, trying again in %ss", self.options.interval)
