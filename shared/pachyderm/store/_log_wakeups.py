"""Wake-ups for readers of the event log: "partition p's log has grown".

A wake-up is a hint, never a guarantee. A reader waits for one with a timeout
and reads the log either way, so a lost wake-up costs at most the timeout
(polling is the fallback) and a spurious one costs a read that finds nothing.

Generations make waiting race-free: a reader takes its partition's generation
*before* it reads the log and then waits for a later one, so a commit that
lands between its read and its wait still wakes it at once. Generations only
grow; :meth:`LocalWakeups.everything_changed` (after a lost connection, when
wake-ups may have been missed) moves every partition's generation on at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol


class LogWakeups(Protocol):
    """Wait for a partition's log to grow (a hint: read the log whatever it says)."""

    def generation(self, partition: int) -> int:
        """A number that grows whenever ``partition``'s log may have grown."""
        ...

    async def wait(self, partition: int, since: int, timeout: float) -> bool:
        """Wait until ``partition``'s generation is past ``since`` (True) or ``timeout``
        seconds went by (False)."""
        ...

    async def close(self) -> None:
        """Stop listening; waiters then only time out."""
        ...


class LocalWakeups:
    """Generations kept in this process and moved by :meth:`committed`.

    The whole port for readers in the process that commits (SQLite, embedded
    mode, tests), and the waiting half of PostgreSQL's listener. One event loop.
    """

    def __init__(self) -> None:
        self._epoch = 0
        self._generations: dict[int, int] = {}
        self._changed: dict[int, asyncio.Event] = {}

    def generation(self, partition: int) -> int:
        # A sum of two counters that only grow: it grows when either does.
        return self._epoch + self._generations.get(partition, 0)

    def committed(self, partitions: Iterable[int]) -> None:
        """``partitions``' logs have grown."""
        for partition in partitions:
            self._generations[partition] = self._generations.get(partition, 0) + 1
            if (changed := self._changed.pop(partition, None)) is not None:
                changed.set()

    def everything_changed(self) -> None:
        """Every log may have grown (wake-ups may have been missed)."""
        self._epoch += 1
        changed, self._changed = self._changed, {}
        for event in changed.values():
            event.set()

    async def wait(self, partition: int, since: int, timeout: float) -> bool:
        if self.generation(partition) != since:
            return True
        changed = self._changed.setdefault(partition, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Nothing to release."""


class NoWakeups:
    """No wake-ups at all (a store that cannot tell): every wait is the polling interval."""

    def generation(self, partition: int) -> int:
        return 0

    async def wait(self, partition: int, since: int, timeout: float) -> bool:
        await asyncio.sleep(timeout)
        return False

    async def close(self) -> None:
        """Nothing to release."""
