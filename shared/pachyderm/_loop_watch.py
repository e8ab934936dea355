"""Watching the running event loop from a thread: the loop stamps, the thread reads.

A blocked event loop cannot notice its own block. A :class:`LoopWatch` has a task
on the loop stamp the time every ``interval`` and runs ``watch`` in a daemon thread
meanwhile; the thread reads the stamp (:attr:`LoopWatch.stamp`, by
``time.monotonic()``) and returns once :attr:`LoopWatch.stopped` is set, as the
task's end sets it (cancelled, or its loop closing). The handler budget's watchdog
and the lease keeper are its two watchers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable


class LoopWatch:
    """A stamp the running loop renews every ``interval``, and a thread running ``watch``."""

    def __init__(self, interval: float, watch: Callable[[], None], *, name: str) -> None:
        self.interval = interval
        self.stamp = time.monotonic()
        self.stopped = threading.Event()
        self._watch = watch
        self._name = name

    def silent(self) -> float:
        """Seconds since the loop last stamped."""
        return time.monotonic() - self.stamp

    async def run(self) -> None:
        """Stamp until cancelled, the thread watching meanwhile."""
        self.stamp = time.monotonic()
        self.stopped.clear()
        threading.Thread(target=self._watch, name=self._name, daemon=True).start()
        try:
            while True:
                self.stamp = time.monotonic()
                await asyncio.sleep(self.interval)
        finally:
            self.stopped.set()
