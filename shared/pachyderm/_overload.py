"""Overload: what a caller is told when the fleet takes no more for now (or has no
worker at all), and the client's own bound on calls in flight.

Invariants: an :class:`OverloadedError` means this send of the command was *not*
enqueued (the broker refused it, or the client never sent it): if it was the first,
nothing of the command applied; a retry later with the same command id applies it
once. ``retry_after`` is a hint in seconds,
the one the gateway puts in ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol, runtime_checkable

from ._errors import PachydermError

# A full partition queue drains at the fleet's pace: a second is a polite first guess.
QUEUE_FULL_RETRY_AFTER = 1.0
# What an OverloadedError says was full.
QUEUE_FULL = "queue-full"
IN_FLIGHT = "in-flight"
# A fleet with no worker needs one started: a few seconds at least.
FLEET_RETRY_AFTER = 5.0


class OverloadedError(PachydermError):
    """The fleet or this client takes no more commands for now; nothing was sent.

    Raised when the partition queue is at its length limit and refuses the publish
    (``PACHYDERM_QUEUE_MAX_LENGTH`` with ``reject-publish``: the broker nacks it), and
    when the client's own calls in flight stay at ``PACHYDERM_CLIENT_MAX_IN_FLIGHT``
    for longer than ``PACHYDERM_CLIENT_WAIT``. Retry after ``retry_after`` seconds.
    ``cause`` says which: ``"queue-full"`` or ``"in-flight"``.
    """

    def __init__(
        self, message: str, *, cause: str = QUEUE_FULL, retry_after: float = QUEUE_FULL_RETRY_AFTER
    ) -> None:
        self.cause = cause
        self.retry_after = retry_after
        super().__init__(message)


class InFlightLimit:
    """At most ``limit`` holders at once (None: no limit); a newcomer waits up to ``wait``
    seconds for a place, in arrival order, then gets :class:`OverloadedError`."""

    def __init__(self, limit: int | None, wait: float) -> None:
        if limit is not None and limit < 1:
            raise ValueError("an in-flight limit is at least 1 (None: no limit)")
        if wait < 0:
            raise ValueError("the wait for a place in flight cannot be negative")
        self.limit = limit
        self.wait = wait
        self._places = asyncio.Semaphore(limit) if limit is not None else None
        self.in_flight = 0
        """Holders now."""

    @asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Hold a place in flight for the block."""
        if self._places is not None:
            await self._acquire(self._places)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if self._places is not None:
                self._places.release()

    async def _acquire(self, places: asyncio.Semaphore) -> None:
        try:
            async with asyncio.timeout(self.wait):
                await places.acquire()
        except TimeoutError:
            raise OverloadedError(
                f"the client has {self.limit} calls in flight (PACHYDERM_CLIENT_MAX_IN_FLIGHT)"
                f" and none ended within {self.wait:g}s (PACHYDERM_CLIENT_WAIT); nothing was"
                " sent",
                cause=IN_FLIGHT,
                retry_after=max(self.wait, QUEUE_FULL_RETRY_AFTER),
            ) from None


class FleetUnavailableError(PachydermError):
    """No worker consumes any of the namespace's partition queues (as last looked, at
    most ``PACHYDERM_GATEWAY_FLEET_CHECK`` seconds ago): a call would only time out.
    Nothing was sent; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)


@runtime_checkable
class PartitionConsumers(Protocol):
    """A transport that can tell how many consumers each partition queue has."""

    async def partition_consumers(self) -> list[int]:
        """The number of consumers of each partition queue, by partition."""
        ...


class FleetWatch:
    """Whether any worker consumes the partition queues, looked at again at most every
    ``interval`` seconds (callers in between share the last look; one looks at a time)."""

    def __init__(self, transport: PartitionConsumers, interval: float) -> None:
        if interval <= 0:
            raise ValueError("a fleet is looked at every so many seconds, more than 0")
        self.transport = transport
        self.interval = interval
        self._serving = True
        self._looked_at: float | None = None
        self._looking = asyncio.Lock()

    async def check(self) -> None:
        """Raise :class:`FleetUnavailableError` if no partition queue had a consumer at
        the last look (looking again first if it is older than the interval)."""
        if self._stale():
            async with self._looking:
                if self._stale():
                    self._serving = any(await self.transport.partition_consumers())
                    self._looked_at = asyncio.get_running_loop().time()
        if not self._serving:
            raise FleetUnavailableError(
                "no worker consumes the fleet's partition queues: a call would time out;"
                " nothing was sent",
                retry_after=max(self.interval, FLEET_RETRY_AFTER),
            )

    def _stale(self) -> bool:
        now = asyncio.get_running_loop().time()
        return self._looked_at is None or now - self._looked_at >= self.interval
