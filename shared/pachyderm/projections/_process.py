"""A projection process: runs every projection of an app on the partitions it owns.

Partitions are spread over the live projection processes by the fleet's
membership (its own group, ``"projections"``, apart from the workers), and
move when one joins, leaves or dies. A partition handed over while its runner
is mid-batch is safe: cursors advance by compare-and-set, so the old runner's
late batch writes nothing (exactly once) or repeats events (at least once).
On PostgreSQL the runners of an exactly-once projection commit the batches they
have ready at the same time in one transaction (:class:`BatchGroup`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

from .._app import App
from ..fleet import Membership
from ..store import EventStore, LogWakeups, NoWakeups
from ._cursors import CursorStore, GroupedCursors
from ._group import BatchGroup
from ._runner import ProjectionRunner, RunnerOptions, apply_events


class ProjectionProcess:
    """Runs ``app``'s projections on the partitions ``membership`` assigns, until stopped."""

    def __init__(
        self,
        app: App,
        store: EventStore,
        cursors: CursorStore,
        membership: Membership,
        *,
        partitions: int,
        options: RunnerOptions | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.cursors = cursors
        self.membership = membership
        self.partitions = partitions
        self.options = options or RunnerOptions()
        self._groups = {
            projection.name: BatchGroup(
                cursors, projection.name, functools.partial(apply_events, app, projection)
            )
            for projection in app.projections
            if projection.exactly_once and isinstance(cursors, GroupedCursors)
        }
        # Built now: a PostgresProjection on SQLite is refused before anything runs.
        self._runners = {
            (projection.name, partition): ProjectionRunner(
                app,
                store,
                cursors,
                projection,
                partition,
                options=self.options,
                group=self._groups.get(projection.name),
            )
            for projection in app.projections
            for partition in range(partitions)
        }
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._wakeups: LogWakeups = NoWakeups()
        self._assignment: frozenset[int] | None = None

    @property
    def owned(self) -> list[int]:
        return sorted({partition for _, partition in self._tasks})

    @property
    def serving(self) -> bool:
        """Whether it runs its projections on exactly the partitions last assigned to it."""
        return self._assignment is not None and set(self.owned) == self._assignment

    async def run(self, stop: asyncio.Event) -> None:
        """Join, run until ``stop`` is set (or the membership's watch fails: then that
        error is raised once stopped), then leave and stop the runners."""
        for projection in self.app.projections:
            await self.cursors.ensure(projection.name, self.partitions)
        self._wakeups = self.store.log_wakeups()
        await self.membership.join()
        watching = asyncio.create_task(self.membership.watch(self._assign, self.partitions))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({watching, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            await self.membership.leave()
            await self._assign([])
            for group in self._groups.values():
                await group.close()
            await self._wakeups.close()
        if not watching.cancelled() and (error := watching.exception()) is not None:
            raise error

    async def _assign(self, owned: Sequence[int]) -> None:
        self._assignment = frozenset(owned)
        stopping = [
            self._tasks.pop(key) for key in list(self._tasks) if key[1] not in self._assignment
        ]
        for task in stopping:
            task.cancel()
        for key, runner in self._runners.items():
            if key[1] in self._assignment and key not in self._tasks:
                self._tasks[key] = asyncio.create_task(
                    runner.run(self._wakeups), name=f"projection {key}"
                )
        # Cancelled mid-batch, a runner leaves its batch uncommitted (at least once: to be
        # applied again by the next owner); wait until the released ones are gone.
        await asyncio.gather(*stopping, return_exceptions=True)
