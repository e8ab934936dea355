"""Group commit: the batches of a worker's partitions share store transactions.

While one commit is in flight, the batches that other partitions want to
commit wait, and then go to the store together in the next one. Under load
that turns many small transactions into a few larger ones (PostgreSQL's cost
per transaction dwarfs its cost per change); a lone batch still commits at
once, in its caller's own task (a task of its own and the hops to it and back
cost about 8 us of every sequential call's 10 us here). Partitions hold
disjoint entities, so batches that share a transaction
never decide on each other's entities: each change still succeeds or is
refused on its own, exactly as in a transaction of its own batch.

On a store spread over several servers by partition (:class:`Sharded`), each
server's share of a group commits on its own (concurrently): a server that fails
fails only the batches of its partitions, never those of another server's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, runtime_checkable

from .._errors import StoreUnavailableError
from ..store import Change, CommitOutcome


class Committer(Protocol):
    """What a group commit needs of the event store."""

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]: ...


@runtime_checkable
class Sharded(Protocol):
    """A store whose partitions live on several servers (a shard map)."""

    def server_of(self, partition: int) -> int:
        """The index of the server holding ``partition``."""
        ...


@dataclass(slots=True)
class _Waiting:
    changes: Sequence[Change]
    outcomes: asyncio.Future[list[CommitOutcome]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    """Commits changes to ``store``, grouping those of concurrent callers.

    ``commit`` answers as ``EventStore.commit`` does, for the caller's own
    changes; if the shared transaction fails, every caller in it gets the error.
    A caller that finds no commit in flight commits alone, in its own task: a
    transaction nobody else is in, which only its caller's cancellation cancels.
    Each shared transaction runs in a task of its own, so that a caller cancelled
    while it waits cannot cancel the others' commit.
    """

    def __init__(self, store: Committer) -> None:
        self.store = store
        self._waiting: list[_Waiting] = []
        self._in_flight: asyncio.Task[None] | None = None
        self._alone = False  # a caller's lone commit is in flight

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        if self._in_flight is None and not self._alone:
            self._alone = True
            try:
                return await self.store.commit(changes)
            finally:
                self._alone = False
                if self._waiting:  # those that came meanwhile go next, together
                    self._commit_waiting()
        waiting = _Waiting(changes)
        self._waiting.append(waiting)
        return await waiting.outcomes

    def _commit_waiting(self) -> None:
        group, self._waiting = self._waiting, []
        self._in_flight = asyncio.ensure_future(self._commit(group))
        self._in_flight.add_done_callback(partial(self._committed, group))

    async def _commit(self, group: list[_Waiting]) -> None:
        try:
            shares = _by_server(group, self.store)
        except Exception as error:
            _fail(group, error)
            return
        if len(shares) == 1:
            await self._commit_share(group)
        else:
            await asyncio.gather(*(self._commit_share(share) for share in shares))

    async def _commit_share(self, group: list[_Waiting]) -> None:
        try:
            outcomes = await self.store.commit([c for waiting in group for c in waiting.changes])
        except Exception as error:
            _fail(group, error)
            return
        start = 0
        for waiting in group:
            end = start + len(waiting.changes)
            if not waiting.outcomes.done():  # else its caller was cancelled
                waiting.outcomes.set_result(outcomes[start:end])
            start = end

    def _committed(self, group: list[_Waiting], _task: asyncio.Task[None]) -> None:
        """The transaction ended: the changes that arrived meanwhile go next.

        A transaction cancelled (even before it began) leaves its callers
        answered: unavailable, so they try again.
        """
        _fail(group, StoreUnavailableError("the shared commit was cancelled"))
        self._in_flight = None
        if self._waiting:
            self._commit_waiting()


def _by_server(group: list[_Waiting], store: Committer) -> list[list[_Waiting]]:
    """``group`` split by server (a batch's changes are of one partition), or whole."""
    if not isinstance(store, Sharded):
        return [group]
    shares: dict[int, list[_Waiting]] = {}
    for waiting in group:
        server = store.server_of(waiting.changes[0].partition) if waiting.changes else 0
        shares.setdefault(server, []).append(waiting)
    return list(shares.values())


def _fail(group: list[_Waiting], error: BaseException) -> None:
    for waiting in group:
        if not waiting.outcomes.done():  # else its caller was cancelled
            waiting.outcomes.set_exception(error)
