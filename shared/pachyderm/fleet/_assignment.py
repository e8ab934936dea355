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

import functools
import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator


def assign(partitions: int, workers: Iterable[str]) -> dict[str, list[int]]:
    """Spread partitions ``0 .. partitions - 1`` over ``workers``.

    Returns each distinct worker (sorted) with its partitions (sorted); every
    partition has exactly one owner. A worker gets ``partitions // len(workers)``
    partitions or one more, so with more workers than partitions some get none.
    No workers, no assignment: ``{}``.
    """
    if partitions < 0:
        raise ValueError(f"partitions must not be negative, not {partitions}")
    live = tuple(sorted(set(workers)))
    if not live:
        return {}
    owned: dict[str, list[int]] = {worker: [] for worker in live}
    for partition, owner in enumerate(_owners(partitions, live)):
        owned[owner].append(partition)
    return owned


def owned_by(partitions: int, workers: Iterable[str], worker: str) -> list[int]:
    """The partitions ``worker`` owns in :func:`assign`; none if it is not among ``workers``."""
    return assign(partitions, workers).get(worker, [])


# Every worker recomputes its share on each heartbeat while the live set mostly
# stays the same; at a thousand partitions and a hundred workers one run costs
# a noticeable fraction of a heartbeat interval.
@functools.lru_cache(maxsize=16)
def _owners(partitions: int, workers: tuple[str, ...]) -> tuple[str, ...]:
    """The owner of each partition; ``workers`` sorted, distinct and not empty."""
    room = _Room(partitions, len(workers))
    owners: dict[int, str] = {}
    for _, worker, partition in sorted(_scored_pairs(partitions, workers), reverse=True):
        if partition not in owners and room.take(worker):
            owners[partition] = worker
    # Every partition ends up owned: one left over would have been refused by
    # every worker for want of room, yet the room adds up to exactly `partitions`.
    return tuple(owners[partition] for partition in range(partitions))


def _scored_pairs(partitions: int, workers: Iterable[str]) -> Iterator[tuple[int, str, int]]:
    for worker in workers:
        for partition in range(partitions):
            digest = hashlib.blake2b(f"{worker}:{partition}".encode(), digest_size=8).digest()
            yield int.from_bytes(digest, "big"), worker, partition


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
