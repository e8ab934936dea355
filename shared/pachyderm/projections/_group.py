"""One exactly-once projection's batches of several partitions, committed together.

In a projection process each partition's runner reads its own log; the batches
ready at the same moment commit in one transaction (one cursor ``UPDATE`` for
all of them, one ``apply_many`` call, one commit) rather than one transaction
each. Live, each partition's batch holds a few events: sixteen transactions, each
with its commit's flush, became one, which shortens the live lag's path and
takes that load off the database the workers commit to.

Invariants: a batch is applied exactly once, in the transaction that moves its
cursor from where the batch was read to its head (the compare-and-set of
:meth:`~pachyderm.projections.GroupedCursors.apply_batches`); a batch whose cursor
moved meanwhile writes nothing while the others of its group commit. The events
of each partition reach ``apply_many`` in log order (partitions one after
another, so each entity's in version order). A transaction starts as soon as a
batch is ready (it never waits for more to come); up to ``in_flight`` (2) are in
flight at once, and the batches that become ready meanwhile go in the next. A
partition is in one at most: its runner waits for its batch before it reads on.
A group that fails is tried again batch by batch, each in a transaction of its
own, so a partition's failing event fails its own runner's batch only. A runner cancelled
while its batch waits withdraws it; once the batch's transaction has started,
it commits with its cursor or not at all, whatever happens to the runner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..store import LoggedEvent
from ._cursors import GroupedCursors

log = logging.getLogger("pachyderm.projections")

Apply = Callable[[list[LoggedEvent], Any], Awaitable[None]]
"""Applies events (of one or more partitions, each partition's in log order) with the
transaction's connection."""


@dataclass(frozen=True, slots=True)
class _Batch:
    partition: int
    start: int
    head: int
    chosen: list[LoggedEvent]
    done: asyncio.Future[bool]


class BatchGroup:
    """Commits the ready batches of one projection's runners, together."""

    def __init__(
        self, cursors: GroupedCursors, projection: str, apply: Apply, *, in_flight: int = 2
    ) -> None:
        self._cursors = cursors
        self._projection = projection
        self._apply = apply
        self._in_flight = in_flight
        self._ready: list[_Batch] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting = False  # a task is made that has not yet taken the ready batches

    async def commit(
        self, partition: int, start: int, head: int, chosen: list[LoggedEvent]
    ) -> bool:
        """Apply ``chosen`` (what the projection handles of ``partition``'s log after
        ``start`` up to ``head``) and move the cursor from ``start`` to ``head``, in one
        transaction with the other batches ready; whether the cursor moved."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._ready.append(_Batch(partition, start, head, chosen, done))
        if not self._starting and len(self._tasks) < self._in_flight:
            # Started on the loop's next turn: the batches ready by then go in together.
            self._starting = True
            task = asyncio.create_task(
                self._commit_ready(), name=f"projection {self._projection} batches"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await done

    async def close(self) -> None:
        """Stop committing: a transaction in flight rolls back, its runners are cancelled."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _commit_ready(self) -> None:
        self._starting = False
        try:
            while self._ready:
                batches = self._take()
                if not batches:
                    continue  # their runners were all cancelled
                try:
                    await self._commit(batches)
                except asyncio.CancelledError:
                    for batch in batches:
                        batch.done.cancel()
                    raise
        except asyncio.CancelledError:
            for batch in self._ready:  # closed: none is committed any more
                batch.done.cancel()
            self._ready = []
            raise

    def _take(self) -> list[_Batch]:
        """The batches still wanted, one per partition (a partition's runner that was
        replaced may have left one behind: the newer waits for the next transaction)."""
        taken: dict[int, _Batch] = {}
        later: list[_Batch] = []
        for batch in self._ready:
            if batch.done.done():
                continue  # its runner was cancelled
            if batch.partition in taken:
                later.append(batch)
            else:
                taken[batch.partition] = batch
        self._ready = later
        return list(taken.values())

    async def _commit(self, batches: list[_Batch]) -> None:
        try:
            moved = await self._together(batches)
        except Exception as error:
            if len(batches) == 1:
                _settle(batches[0], error)
                return
            log.info(
                "projection %s: a group of %d batches failed (%s); each alone",
                self._projection,
                len(batches),
                error,
            )
            for batch in batches:
                await self._alone(batch)
            return
        for batch in batches:
            _settle(batch, batch.partition in moved)

    async def _alone(self, batch: _Batch) -> None:
        if batch.done.done():
            return
        try:
            moved = await self._together([batch])
        except Exception as error:
            _settle(batch, error)
        else:
            _settle(batch, batch.partition in moved)

    async def _together(self, batches: list[_Batch]) -> frozenset[int]:
        async def work(connection: Any, moved: frozenset[int]) -> None:
            events = [event for b in batches if b.partition in moved for event in b.chosen]
            await self._apply(events, connection)

        moves = [(batch.partition, batch.start, batch.head) for batch in batches]
        return await self._cursors.apply_batches(self._projection, moves, work)


def _settle(batch: _Batch, outcome: bool | Exception) -> None:
    if batch.done.done():
        return  # its runner was cancelled meanwhile
    if isinstance(outcome, Exception):
        batch.done.set_exception(outcome)
    else:
        batch.done.set_result(outcome)
