"""Keeping a worker's lease while its event loop is blocked: a thread renews it.

A handler that hangs until the watchdog interrupts it, a long collector pass or a
slow call into C blocks the worker's event loop, and the membership's heartbeat
with it. Past ``dead_after`` the others count the worker dead and take its
partitions, and they hand them back once its loop runs again: two hand-overs for
a pause of a second or two, while the deliveries the blocked worker already holds
wait for it either way. Akka's failure detector tolerates such a pause for the same
reason (its *acceptable heartbeat pause*), and so does this one, without slowing
the failover of a worker that died.

:class:`LeaseKeeper` runs a daemon thread beside the loop. A task on the loop
stamps it every heartbeat interval; while the stamp is older than 1.25 intervals
(the loop is blocked) and younger than ``tolerance``, the thread renews the lease
itself, through a :class:`Renewal` on an event loop and a database connection of
its own, made when the pause begins and closed when it ends (one record, a
warning, per pause).

Invariants:

- The thread renews only a lease that still holds, of this instance's row, and
  never makes a row: a lease that lapsed stays lapsed (the others may serve its
  partitions already) and one given up (``abandon``) stays given up.
- Past ``tolerance`` it stops renewing, so a loop blocked for good loses its lease
  ``dead_after`` later, as a dead process does. A killed process has no thread:
  its failover is unchanged.
- The loop learns when the thread last renewed (:meth:`LeaseKeeper.renewed_ago`),
  so on waking it does not count its own lease lapsed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from .._loop_watch import LoopWatch

log = logging.getLogger("pachyderm.fleet")

# The loop counts as blocked once its stamp is this many heartbeat intervals old:
# late enough that a busy loop's late timer is rarely taken for a pause (which costs
# a connection and a renewal, nothing worse), early enough that the thread renews
# before the lease lapses. The loop's last renewal may precede the pause by an
# interval; its lease (three intervals by default) then has two left, of which the
# thread takes 1.25 and at most an eighth to notice, leaving 0.6 for its connection.
_BLOCKED_AFTER = 1.25
# The thread looks this many times per interval, renewing at most once per interval.
_LOOKS = 8


class Renewal(Protocol):
    """A lease's renewal from another thread, on that thread's own event loop."""

    async def renew(self) -> bool:
        """Renew the lease if it still holds; whether it did."""

    async def close(self) -> None:
        """Release what the renewals used (a connection)."""


class LeaseKeeper:
    """Renews a lease from a thread while the event loop that should is blocked."""

    def __init__(
        self, renewal: Callable[[], Renewal], *, interval: float, tolerance: float
    ) -> None:
        """``renewal`` makes a :class:`Renewal` in the thread at each pause; ``interval``
        is the heartbeat's; past ``tolerance`` seconds of a pause, the lease is let go."""
        if interval <= 0 or tolerance <= 0:
            raise ValueError(f"need a positive interval and tolerance, not {interval}, {tolerance}")
        self._renewal = renewal
        self.tolerance = tolerance
        self._loop = LoopWatch(interval, self._watch, name="pachyderm-lease-keeper")
        self._renewed: float | None = None  # when the thread's last renewal was sent

    @property
    def interval(self) -> float:
        """The heartbeat's interval (its loop stamp's)."""
        return self._loop.interval

    def renewed_ago(self) -> float | None:
        """Seconds since the thread's last renewal that took was sent; None if none took."""
        renewed = self._renewed
        return None if renewed is None else time.monotonic() - renewed

    async def run(self) -> None:
        """Stamp the loop's beat until cancelled, the thread watching meanwhile."""
        await self._loop.run()

    def _watch(self) -> None:
        pause: _Pause | None = None
        try:
            while not self._loop.stopped.wait(self.interval / _LOOKS):
                blocked = self._loop.silent()
                if _BLOCKED_AFTER * self.interval < blocked <= self.tolerance:
                    pause = pause or _Pause(self._renewal, blocked)
                    self._renew(pause)
                elif pause is not None:
                    pause.end(blocked, let_go=blocked > self.tolerance)
                    pause = None
        finally:
            if pause is not None:
                pause.end(self._loop.silent(), let_go=False)

    def _renew(self, pause: _Pause) -> None:
        sent = time.monotonic()
        if self._renewed is not None and sent - self._renewed < self.interval:
            return
        if pause.renew():
            self._renewed = sent


class _Pause:
    """One pause of the loop, seen from the thread: its event loop and renewal."""

    def __init__(self, renewal: Callable[[], Renewal], blocked: float) -> None:
        log.debug("the event loop has been blocked for %.1f s: renewing the lease", blocked)
        self._runner = asyncio.Runner()
        self._renewal = renewal()
        self.renewals = 0

    def renew(self) -> bool:
        try:
            renewed = self._runner.run(self._renewal.renew())
        except Exception as error:  # the lease lapses by itself: nothing worse
            log.warning("renewing the lease from a thread failed: %s", error)
            return False
        self.renewals += renewed
        return renewed

    def end(self, blocked: float, *, let_go: bool) -> None:
        try:
            self._runner.run(self._renewal.close())
        except Exception as error:
            log.warning("closing the lease keeper's connection failed: %s", error)
        finally:
            self._runner.close()
        log.log(
            logging.ERROR if let_go else logging.WARNING,
            "the event loop %s after %.1f s blocked; the thread renewed the lease %d times",
            "is still blocked: its lease is let go" if let_go else "runs again",
            blocked,
            self.renewals,
            extra={"event": "fleet.lease_kept_end", "blocked": blocked, "let_go": let_go},
        )
