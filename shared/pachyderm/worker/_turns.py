"""Entity turns: which entities a partition is deciding on, so that runs of the engine
for other entities need not wait for them.

A partition applies its batches of deliveries one after another, and fires its
timers beside them: a fire waits only for the runs that hold one of its own
entities, not for the whole batch in flight (a busy partition's timers would
otherwise queue behind its traffic, a batch and a commit each time).

Invariant: an entity is in at most one run of the worker's engine at a time (its
partitions share one :class:`EntityTurns`: an entity is normally served by one
partition, but a broker restart can move it to another while its old queue still
holds some of its commands), so each run decides on the state the one before it
left (never on one that a run in flight is about to replace), as in a partition
applying everything one at a time. The order between a fire and a batch wanting
the same entity is the order they get it in (a timer's command has no place in any
queue); the order of deliveries is their batches' order, which the partition keeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from .._reference import Ref


class EntityTurns:
    """Per-entity turns of one partition's engine runs."""

    def __init__(self) -> None:
        # Each entity held, with the future its holder resolves when its run ends.
        self._held: dict[Ref, asyncio.Future[None]] = {}

    @asynccontextmanager
    async def holding(self, refs: Iterable[Ref]) -> AsyncIterator[None]:
        """Hold ``refs`` for the block, once no other run holds any of them."""
        wanted = set(refs)
        while held := {self._held[ref] for ref in wanted if ref in self._held}:
            # asyncio.wait leaves the futures alone if this waiter is cancelled.
            await asyncio.wait(held)
        ended = asyncio.get_running_loop().create_future()
        self._held.update(dict.fromkeys(wanted, ended))
        try:
            yield
        finally:
            for ref in wanted:
                del self._held[ref]
            ended.set_result(None)
