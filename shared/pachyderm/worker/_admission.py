"""A worker-wide cap on commands in flight, shared fairly by the worker's partitions.

Invariants:

- The deliveries a worker's partitions are handling (handed out in a batch and not yet
  done with) never number more than ``limit``. A partition asks for room each time it
  takes a batch and gives it back when it takes the next one (its previous batch is
  settled by then: acked, dead-lettered or left for the next owner) or closes.
- Room goes to partitions in the order they asked for it, and a grant is at most an
  equal share of the limit among the partitions holding or asking for room at that
  moment: a busy partition cannot keep the others waiting for more than one batch.
  A partition always gets at least one delivery's room once room is free, so every
  partition makes progress whatever the limit.
- What a partition has no room for stays where it was: delivered but unacknowledged
  (at most the prefetch, per partition) or in the broker's queue. Nothing is refused
  or requeued for it, so the order of a partition's deliveries is kept.

Timer fires are not deliveries and are not counted (they are bounded by their rate).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

from ..transport import Delivery, Inbox


@dataclass(slots=True)
class _Asking:
    partition: int
    wanted: int
    granted: asyncio.Future[int]


class Admission:
    """Room for ``limit`` deliveries in flight, granted to partitions in turn."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a limit of commands in flight is at least 1")
        self.limit = limit
        self.in_flight = 0
        self._holding: Counter[int] = Counter()
        self._asking: deque[_Asking] = deque()

    async def acquire(self, partition: int, wanted: int) -> int:
        """Room for 1 to ``wanted`` deliveries of ``partition``, once there is room;
        0 if the partition withdrew meanwhile (:meth:`withdraw`)."""
        if wanted < 1:
            raise ValueError("ask for room for 1 delivery or more")
        if not self._asking and (granted := self._grant(partition, wanted)):
            return granted
        asking = _Asking(partition, wanted, asyncio.get_running_loop().create_future())
        self._asking.append(asking)
        try:
            return await asking.granted
        except asyncio.CancelledError:
            if asking in self._asking:
                self._asking.remove(asking)
            elif asking.granted.done() and not asking.granted.cancelled():
                self.release(partition, asking.granted.result())
            raise

    def release(self, partition: int, count: int) -> None:
        """Give back room ``partition`` held for ``count`` deliveries."""
        if count <= 0:
            return
        if count > self._holding[partition]:
            raise ValueError(f"partition {partition} gives back more room than it holds")
        self.in_flight -= count
        self._holding[partition] -= count
        if not self._holding[partition]:
            del self._holding[partition]
        self._grant_waiting()

    def withdraw(self, partition: int) -> None:
        """Stop asking for ``partition``: its waiting :meth:`acquire` returns 0."""
        for asking in [a for a in self._asking if a.partition == partition]:
            self._asking.remove(asking)
            if not asking.granted.done():
                asking.granted.set_result(0)
        self._grant_waiting()  # the others' shares may have grown

    def _share(self, partition: int) -> int:
        contenders = {*self._holding, *(a.partition for a in self._asking), partition}
        return max(1, self.limit // len(contenders))

    def _grant(self, partition: int, wanted: int) -> int:
        room = min(wanted, self.limit - self.in_flight, self._share(partition))
        if room <= 0:
            return 0
        self.in_flight += room
        self._holding[partition] += room
        return room

    def _grant_waiting(self) -> None:
        while self._asking:
            first = self._asking[0]
            if first.granted.done():  # cancelled meanwhile
                self._asking.popleft()
                continue
            if not (granted := self._grant(first.partition, first.wanted)):
                return
            self._asking.popleft()
            first.granted.set_result(granted)


class AdmittedInbox:
    """An :class:`~pachyderm.transport.Inbox` whose batches fit the worker's room.

    A batch taken from it holds room until the next :meth:`take` or :meth:`close`;
    deliveries taken from the wrapped inbox beyond the room granted wait here, in
    order, for the next batch.
    """

    def __init__(self, inbox: Inbox, admission: Admission) -> None:
        self.inbox = inbox
        self.partition = inbox.partition
        self.admission = admission
        self._waiting: deque[Delivery] = deque()
        self._held = 0
        self._closed = False

    async def take(self, max_count: int) -> list[Delivery]:
        """The next batch (at least one delivery, at most ``max_count`` and the room
        granted); ``[]`` once closed."""
        self._give_back()
        if not self._waiting:
            self._waiting.extend(await self.inbox.take(max_count))
        if self._closed or not self._waiting:
            return []
        wanted = min(max_count, len(self._waiting))
        room = await self.admission.acquire(self.partition, wanted)
        if self._closed or not room:
            self.admission.release(self.partition, room)
            return []
        self._held = room
        return [self._waiting.popleft() for _ in range(room)]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self.inbox.ack(deliveries)

    async def dead_letter(self, deliveries: Sequence[Delivery]) -> None:
        await self.inbox.dead_letter(deliveries)

    async def requeue(self, deliveries: Sequence[Delivery]) -> None:
        await self.inbox.requeue(deliveries)

    async def close(self) -> None:
        """Give the room back and close the wrapped inbox: what waits here returns to
        the queue with its other unsettled deliveries."""
        self._closed = True
        self._waiting.clear()
        self.admission.withdraw(self.partition)
        self._give_back()
        await self.inbox.close()

    def _give_back(self) -> None:
        held, self._held = self._held, 0
        self.admission.release(self.partition, held)
