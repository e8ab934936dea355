"""The cursor store port: where each projection is in each partition's log.

A cursor is the last log position a projection applied in a partition (0:
none). Backends: :class:`~pachyderm.projections.PostgresCursors` (both kinds
of projection) and :class:`~pachyderm.projections.SqliteCursors` (at least once
only). Invariants every backend keeps: a cursor moves only from the position
its mover read (:meth:`CursorStore.advance` is a compare-and-set), so two
runners of one cursor never both advance it; a rebuild resets all of a
projection's cursors at once, in the transaction that clears its read model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

Clear = Callable[[Any], Awaitable[None]]
"""What a rebuild calls to empty the read model, with the transaction's connection
(None where there is none)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """A projection's place in one partition's log, and what operators asked of it."""

    projection: str
    partition: int
    position: int
    paused: bool
    rebuilding: bool
    updated_at: datetime


class CursorStore(Protocol):
    """The cursors of a namespace's projections (the ``projection_cursors`` table)."""

    async def ensure(self, projection: str, partitions: int) -> None:
        """Create the missing cursors of ``projection`` for partitions ``0..partitions-1``
        (at position 0); existing ones stay as they are."""
        ...

    async def cursors(self, projection: str | None = None) -> list[Cursor]:
        """The cursors of ``projection`` (else of all), by projection and partition."""
        ...

    async def advance(self, projection: str, partition: int, expected: int, position: int) -> bool:
        """Move a cursor from ``expected`` to ``position``; False (and nothing written)
        when it is no longer at ``expected``, or paused, or being rebuilt."""
        ...

    async def set_paused(self, projection: str, paused: bool) -> int:
        """Pause or resume all the cursors of ``projection``; how many there are."""
        ...

    async def request_rebuild(self, projection: str) -> int:
        """Mark all the cursors of ``projection`` for a rebuild; how many there are."""
        ...

    async def rebuild(self, projection: str, clear: Clear) -> bool:
        """If ``projection`` is marked for a rebuild: in one transaction, ``clear`` its read
        model, reset its cursors to 0 and unmark them; whether it did."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class TransactionalCursors(CursorStore, Protocol):
    """Cursors that advance in the transaction of a read model's writes (exactly once)."""

    async def apply_batch(
        self,
        projection: str,
        partition: int,
        expected: int,
        position: int,
        work: Callable[[Any], Awaitable[None]],
    ) -> bool:
        """In one transaction: ``work(connection)`` and the cursor from ``expected`` to
        ``position``; False (nothing written, ``work`` not run) when the cursor is no longer
        at ``expected``, or paused, or being rebuilt."""
        ...


@runtime_checkable
class GroupedCursors(TransactionalCursors, Protocol):
    """Transactional cursors that also move several partitions' cursors in one transaction
    (a projection process commits its runners' ready batches together)."""

    async def apply_batches(
        self,
        projection: str,
        moves: Sequence[tuple[int, int, int]],
        work: Callable[[Any, frozenset[int]], Awaitable[None]],
    ) -> frozenset[int]:
        """In one transaction: each ``(partition, expected, position)`` of ``moves`` (one per
        partition) that is still at ``expected``, not paused and not being rebuilt moves to
        ``position``, and ``work(connection, moved)`` runs with the partitions that moved
        (not at all when none did); those partitions, or an empty set (nothing written)."""
        ...
