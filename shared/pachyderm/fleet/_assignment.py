"""Which worker consumes which partition: a pure function of the live workers.

Every worker computes the assignment on its own from the same membership list,
so it must be deterministic (a stable hash, never the process-salted
``hash()``) and independent of the list's order. It is rendezvous hashing with
bounded loads: each (worker, partition) pair gets a pseudo-random score that
depends on nothing else, and pairs are granted from the highest score down
while the worker still has room. Because a pair's score ignores who else is
live, a join or a leave leaves most winners alone; the room keeps the load
balanced, every worker getting ``partitions // workers`` partitions or one more.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
from collections import Counter
from collections.abc import Iterable


def assign(partitions: int, workers: Iterable[str]) -> dict[str, list[int]]:
    """Spread partitions ``0 .. partitions - 1`` over ``workers``.

    Returns each distinct worker (sorted) with its partitions (sorted); every
    partition has exactly one owner. A worker gets ``partitions // len(workers)``
    partitions or one more, so with more workers than partitions some get none.
    No workers, no assignment: ``{}``.
    """
    live = _live(partitions, workers)
    if not live:
        return {}
    return {worker: list(owned) for worker, owned in _shares(partitions, live).items()}


def owned_by(partitions: int, workers: Iterable[str], worker: str) -> list[int]:
    """The partitions ``worker`` owns in :func:`assign`; none if it is not among ``workers``."""
    live = _live(partitions, workers)
    return list(_shares(partitions, live).get(worker, ())) if live else []


async def prepare(partitions: int, workers: Iterable[str]) -> None:
    """Work out the preferences of ``workers`` that are not known yet, letting the event
    loop run after each (a couple of milliseconds a worker).

    The first assignment a process computes in a fleet of a thousand workers needs
    all their preferences, seconds of work in one go: done in :func:`owned_by`, it
    would hold the event loop, heartbeats with it, longer than ``dead_after``.
    """
    for worker in sorted(set(workers)):
        misses = _preferences.cache_info().misses
        _preferences(partitions, worker)
        if _preferences.cache_info().misses != misses:
            await asyncio.sleep(0)


def _live(partitions: int, workers: Iterable[str]) -> tuple[str, ...]:
    if partitions < 0:
        raise ValueError(f"partitions must not be negative, not {partitions}")
    return tuple(sorted(set(workers)))


# A worker asks for its share on every heartbeat: the share of each worker is
# kept with the assignment, not rebuilt from the owners on each call.
@functools.lru_cache(maxsize=16)
def _shares(partitions: int, workers: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """Each worker's partitions (sorted); ``workers`` sorted, distinct and not empty."""
    owned: dict[str, list[int]] = {worker: [] for worker in workers}
    for partition, owner in enumerate(_owners(partitions, workers)):
        owned[owner].append(partition)
    return {worker: tuple(partitions) for worker, partitions in owned.items()}


# Every worker recomputes its share on each heartbeat while the live set mostly
# stays the same: the last few assignments are kept.
@functools.lru_cache(maxsize=16)
def _owners(partitions: int, workers: tuple[str, ...]) -> tuple[str, ...]:
    """The owner of each partition; ``workers`` sorted, distinct and not empty.

    The grant goes through the (worker, partition) pairs from the highest score
    down, as ``(score, worker, partition)`` tuples sorted in reverse would, but
    lazily: each worker's partitions are sorted once (:func:`_preferences`,
    kept across calls) and merged on a heap of one next pair per worker, so a
    change of the live set costs the pairs above the score at which the last
    partition is granted (a few per partition), not a sort of every pair: at
    1,024 partitions and 1,000 workers, milliseconds instead of seconds. A
    worker refused once is refused for good (its room only shrinks), so its
    lower pairs are never looked at.
    """
    room = _Room(partitions, len(workers))
    owners: dict[int, str] = {}
    # Heap keys ascend as the reverse sort descends: score, then worker, then partition.
    preferences = [_preferences(partitions, worker) for worker in workers]
    heap = [
        (-best[0][0], -rank, -best[0][1], rank, 0) for rank, best in enumerate(preferences) if best
    ]
    heapq.heapify(heap)
    while len(owners) < partitions:
        _, _, _, rank, at = heap[0]
        worker, partition = workers[rank], preferences[rank][at][1]
        if partition not in owners:
            if not room.take(worker):
                heapq.heappop(heap)
                continue
            owners[partition] = worker
        if at + 1 < partitions:
            score, following = preferences[rank][at + 1]
            heapq.heapreplace(heap, (-score, -rank, -following, rank, at + 1))
        else:
            heapq.heappop(heap)
    # Every partition ends up owned: one left over would have been refused by
    # every worker for want of room, yet the room adds up to exactly `partitions`.
    return tuple(owners[partition] for partition in range(partitions))


# A fleet's workers, a few times over for restarts under new names; each entry
# holds one worker's partitions in its order of preference (score descending).
@functools.lru_cache(maxsize=4096)
def _preferences(partitions: int, worker: str) -> tuple[tuple[int, int], ...]:
    """``worker``'s (score, partition) pairs, best first (ties: the higher partition first).

    A pair's score is a stable hash of nothing but the pair: the first 8 bytes
    of BLAKE2b of ``"{worker}:{partition}"``, big-endian (hashed from a copy
    of the worker's prefix, which gives the same digest at half the cost).
    """
    prefix = hashlib.blake2b(f"{worker}:".encode(), digest_size=8)
    scores = []
    for partition in range(partitions):
        pair = prefix.copy()
        pair.update(str(partition).encode())
        scores.append((int.from_bytes(pair.digest(), "big"), partition))
    return tuple(sorted(scores, reverse=True))


class _Room:
    """How many partitions each worker may still take.

    Each worker may take ``partitions // workers``; the ``partitions % workers``
    left over go one each to the first workers to ask for one more. The total
    room is exactly ``partitions``, and while some is left, some worker that
    has not reached its limit can still take a partition.
    """

    def __init__(self, partitions: int, workers: int) -> None:
        self._base, self._extra = divmod(partitions, workers)
        self._taken: Counter[str] = Counter()

    def take(self, worker: str) -> bool:
        """Count one more partition for ``worker`` if it has room; False if not."""
        taken = self._taken[worker]
        if taken == self._base and self._extra:
            self._extra -= 1
        elif taken >= self._base:
            return False
        self._taken[worker] += 1
        return True
