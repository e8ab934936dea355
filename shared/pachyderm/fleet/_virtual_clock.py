"""An asyncio event loop on a virtual clock: time jumps to the next timer instead of passing.

The simulation of a fleet runs the members' real coroutines (sleeps, timeouts,
task groups) on it, so a minute of a thousand heartbeating workers takes as long
as the code takes to run, and a run is repeatable: nothing depends on how fast
the machine is.

Invariant: the clock only moves when nothing is ready to run. The loop asks its
selector to wait for ``timeout`` seconds only when every ready callback has run;
this selector then polls the real one without blocking (the loop's own wake-up
pipe stays registered there) and, if nothing came, moves the clock to the
deadline. Code that waits for real I/O or threads therefore never progresses:
the simulation does none. A loop with no timer pending and nothing ready would
block for ever: :class:`SimulationStalledError` says so instead.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any

from .._errors import PachydermError


class SimulationStalledError(PachydermError):
    """Nothing can ever happen on the virtual clock: no timer pending, nothing ready."""


class _VirtualSelector(selectors.BaseSelector):
    """Polls a real selector, never blocks on it; a wait moves the virtual clock instead."""

    def __init__(self, start: float) -> None:
        self.now = start
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise SimulationStalledError("no timer pending and nothing ready: the run can't end")
        self.now += timeout
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual, starting at ``start`` seconds."""

    def __init__(self, start: float = 0.0) -> None:
        self._virtual = _VirtualSelector(start)
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now
