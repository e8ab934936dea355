"""Hot entity state kept in memory with its version: bounded, and idle entries unloaded."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .._reference import Ref


@dataclass(slots=True)
class Hot:
    """An entity's state as of ``version``, and when it was last used; ``ended``: how
    its life ended (``"ended"``, ``"erased"``), None while it lives."""

    state: Any
    version: int
    used_at: float
    ended: str | None = None


class EntityCache:
    """Least-recently-used entity states, at most ``capacity``, each unloaded after
    ``idle_timeout`` seconds without use (the original's worker inactivity timeout).

    A cached state may be stale when another worker committed since: the
    version check at commit time catches that, so the cache is an
    optimisation only, never a source of truth.
    """

    def __init__(
        self,
        capacity: int = 100_000,
        idle_timeout: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._entries: OrderedDict[Ref, Hot] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, ref: Ref) -> bool:
        return ref in self._entries

    def get(self, ref: Ref) -> Hot | None:
        hot = self._entries.get(ref)
        if hot is not None:
            hot.used_at = self._clock()
            self._entries.move_to_end(ref)
        return hot

    def put(self, ref: Ref, state: Any, version: int, ended: str | None = None) -> None:
        self._entries[ref] = Hot(state, version, self._clock(), ended)
        self._entries.move_to_end(ref)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, refs: Iterable[Ref]) -> None:
        for ref in refs:
            self._entries.pop(ref, None)

    def unload_idle(self) -> int:
        """Drop entries idle for longer than the timeout; returns how many."""
        deadline = self._clock() - self.idle_timeout
        dropped = 0
        # Oldest use first: stop at the first entry used recently enough.
        while self._entries:
            ref, hot = next(iter(self._entries.items()))
            if hot.used_at > deadline:
                break
            del self._entries[ref]
            dropped += 1
        return dropped
