"""Suspect batches decided beside their partition, not in its way.

A batch holding a delivery that may be a poison's is decided in a forked child
first (:mod:`._isolation`), which may take up to the handler budget before the
worker knows whether it lived. The partition does not wait for it: the batch
runs as a task of its own, and the partition goes on with its other
deliveries. Only those addressed to the batch's entities wait, queued behind it
in arrival order (its *followers*): an entity's commands keep their order, the
others flow. A delivery addressed to no entity (a fence of ``pachyderm
repartition``, which says that all before it in its queue is settled, or a
publisher's mistake) waits until no run is left, and every delivery after it
waits with it (the *barrier*).

A run that ended is wound up under the partition's lock (see
:meth:`SuspectRuns.finish`): its entities are let go and its followers, then
the barrier's deliveries once no run is left, are handled as new arrivals are,
in order, behind its own deliveries if they must go again (its child died, the
store failed). Wound up in the order the runs ended, since asyncio's lock is
first come, first served.

Invariants: an entity is in at most one run; a delivery is in one place at a
time (the partition's batch, a run, a run's followers, the barrier), and one
set aside here is not admitted again by a retry of the batch it came in
(:meth:`SuspectRuns.aside`); stored commands run again by an operator's
decision (tags below zero) are never set aside: the release that runs them
waits for them (their entity's turn, :class:`EntityTurns`, keeps them behind a
run of it).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..transport import Delivery


def entity_of(delivery: Delivery) -> uuid.UUID | None:
    """The entity ``delivery`` is addressed to (None: not a valid id)."""
    try:
        return uuid.UUID(delivery.message.routing_key)
    except ValueError:
        return None


@dataclass(eq=False, slots=True)
class SuspectRun:
    """One suspect batch being decided, and the deliveries waiting behind it."""

    batch: Sequence[Delivery]
    entities: frozenset[uuid.UUID | None]
    followers: list[Delivery] = field(default_factory=list)


class SuspectRuns:
    """One partition's suspect batches in flight."""

    def __init__(self) -> None:
        self._held: dict[uuid.UUID | None, SuspectRun] = {}
        self._runs: set[SuspectRun] = set()  # not wound up yet
        self._barrier: list[Delivery] | None = None
        self._aside: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = False

    def aside(self, delivery: Delivery) -> bool:
        """Whether ``delivery`` is in a run or waits behind one."""
        return delivery.tag in self._aside

    def free(self, batch: Sequence[Delivery]) -> list[Delivery]:
        """The deliveries of ``batch`` that may go now, in order; the others are queued
        behind the runs they must wait for."""
        if not self._runs and self._barrier is None:
            return list(batch)  # the healthy path: nothing to wait for
        free: list[Delivery] = []
        for delivery in batch:
            waiting = None if delivery.tag < 0 else self._behind(delivery)
            if waiting is None:
                free.append(delivery)
            else:
                waiting.append(delivery)
                self._aside.add(delivery.tag)
        return free

    def _behind(self, delivery: Delivery) -> list[Delivery] | None:
        if self._barrier is not None:
            return self._barrier
        entity = entity_of(delivery)
        if entity is None and self._runs:
            self._barrier = []
            return self._barrier
        run = self._held.get(entity)
        return None if run is None else run.followers

    def start(
        self,
        batch: Sequence[Delivery],
        decide: Callable[[SuspectRun], Coroutine[Any, Any, None]],
    ) -> None:
        """Run ``decide`` for ``batch`` as a task; its entities wait for it (until
        :meth:`finish`). Once stopped, ``batch`` is only set aside (left unsettled)."""
        run = SuspectRun(batch, frozenset(entity_of(d) for d in batch))
        self._runs.add(run)
        self._held.update(dict.fromkeys(run.entities, run))
        self._aside.update(d.tag for d in batch)
        if self._stopped:
            return
        task = asyncio.create_task(decide(run), name="suspect-run")
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    def finish(self, run: SuspectRun) -> list[Delivery]:
        """Let ``run``'s entities go; the deliveries that waited for it, in order, to be
        handled next (under the partition's lock, before anything newer of theirs)."""
        self._runs.discard(run)
        for entity in run.entities:
            if self._held.get(entity) is run:
                del self._held[entity]
        waited = run.followers
        if not self._runs and self._barrier is not None:
            waited, self._barrier = [*waited, *self._barrier], None
        self._aside.difference_update(d.tag for d in (*run.batch, *waited))
        return waited

    async def idle(self) -> None:
        """Return once no run is in flight (nor being wound up)."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Cancel the runs: their deliveries, and those behind them, stay unsettled (the
        partition's inbox hands them back when it closes)."""
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
