"""The handler time budget: a thread that ends the process when its event loop stalls.

``handle`` and ``update`` are plain functions run on the worker's event loop: one
that loops forever blocks the loop, and with it the membership's heartbeats,
every other partition and any async clean-up. So the watch cannot rely on the
loop: a task on the loop stamps a heartbeat every ``budget / 10`` seconds and a
daemon thread reads it. Once the heartbeat is older than the budget, the thread
first interrupts the decision the loop is stuck in, if it is stuck in one
(:mod:`._interruption`: the handler's batch then counts as a poison's attempt
and the worker goes on; a structured ``worker.interrupted`` record). If the
loop is stuck elsewhere, or still stuck ``budget / 4`` seconds after the
interruption (a handler blocked in C code, or one that swallowed it), the thread
logs the stall (a structured ``worker.stalled`` record) and ends the process
with :data:`EXIT_STALLED` (``os._exit``: no clean-up can run on a blocked loop).

Before it exits, the worker gives its lease up from the thread, on a database
connection of its own (:class:`~pachyderm.fleet._port.Abandons`), so the others take
its partitions on their next heartbeat rather than once the lease lapses. What
follows is the fleet's ordinary recovery, which is why exiting is enough: the
broker connection closes, so the unsettled deliveries go back to their queues
marked *redelivered*; the worker has left (or its heartbeats have stopped), so
its partitions move to the others; and the command that hung is counted when it
is decided again in a forked child of the next owner (see :mod:`._quarantine`),
until it is quarantined. A process supervisor (Kubernetes) starts the worker again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from .._loop_watch import LoopWatch
from ._interruption import interrupt

log = logging.getLogger("pachyderm.worker")

EXIT_STALLED = 75
"""The exit status of a worker whose event loop stayed blocked past the handler budget."""
DEFAULT_BUDGET = 10.0


def exit_stalled(stalled: float) -> None:
    """End the process with :data:`EXIT_STALLED` (no clean-up: the loop is blocked)."""
    logging.shutdown()  # flush the record above before the process goes
    os._exit(EXIT_STALLED)


class Watchdog:
    """Watches the running event loop from a thread; ``on_stall(seconds)`` once it has
    not run for ``budget`` seconds (by default: exit with :data:`EXIT_STALLED`)."""

    def __init__(self, budget: float, *, on_stall: Callable[[float], None] = exit_stalled) -> None:
        if budget <= 0:
            raise ValueError(f"the handler budget is a positive number of seconds, not {budget}")
        self.budget = budget
        self.on_stall = on_stall
        self._grace = budget / 4  # for an interrupted decision to give the loop back
        self._loop = LoopWatch(budget / 10, self._watch, name="pachyderm-watchdog")
        self._thread = threading.get_ident()  # the loop's, once run

    async def run(self) -> None:
        """Stamp the heartbeat until cancelled, watched by a thread meanwhile."""
        self._thread = threading.get_ident()
        await self._loop.run()

    def _watch(self) -> None:
        loop = self._loop
        interrupted = None  # the heartbeat of the stall interrupted, if one was
        while not loop.stopped.wait(loop.interval):
            beat = loop.stamp
            stalled = time.monotonic() - beat
            if stalled <= self.budget:
                continue
            if interrupted != beat and interrupt(self._thread):
                interrupted = beat
                self._log_interrupted(stalled)
                continue
            if interrupted == beat and stalled <= self.budget + self._grace:
                continue  # giving the interruption its chance
            self._log_stalled(stalled)
            self.on_stall(stalled)
            return

    def _log_interrupted(self, stalled: float) -> None:
        log.error(
            "a handler has blocked the event loop for %.1f s, past the handler budget of"
            " %.1f s: interrupted; its batch counts as an attempt and is admitted again",
            stalled,
            self.budget,
            extra={"event": "worker.interrupted", "stalled": stalled, "budget": self.budget},
        )

    def _log_stalled(self, stalled: float) -> None:
        log.critical(
            "the event loop has been blocked for %.1f s, past the handler budget of"
            " %.1f s (a handler that hangs?): leaving the fleet by exiting with"
            " status %d; its command is counted when it is delivered again",
            stalled,
            self.budget,
            EXIT_STALLED,
            extra={"event": "worker.stalled", "stalled": stalled, "budget": self.budget},
        )
