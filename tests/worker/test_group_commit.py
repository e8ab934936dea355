"""Group commit: concurrent batches share store transactions, each gets its own outcomes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace

import pytest

from pachyderm import Ref, StoreError, StoreUnavailableError
from pachyderm.store import Change, CommitOutcome, Committed, NewEvent
from pachyderm.worker._group_commit import GroupCommit


def change(label: str) -> Change:
    return Change(Ref("counter", uuid.uuid4()), 0, label, [NewEvent("Increased", b"\x01")])


class HeldStore:
    """Records each commit's changes; a commit waits until released, or fails if told."""

    def __init__(self) -> None:
        self.commits: list[list[str]] = []
        self.release = asyncio.Event()
        self.failing: Exception | None = None

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        self.commits.append([c.command_id for c in changes])
        await self.release.wait()
        if self.failing is not None:
            raise self.failing
        # The version tells the outcomes apart: the change's place in its transaction.
        return [Committed(place) for place in range(1, len(changes) + 1)]


async def started(group: GroupCommit, *labels: str) -> list[asyncio.Task[list[CommitOutcome]]]:
    tasks = [asyncio.create_task(group.commit([change(label)])) for label in labels]
    await asyncio.sleep(0)  # let them all queue up
    return tasks


async def test_batches_arriving_during_a_commit_share_the_next_one() -> None:
    store = HeldStore()
    group = GroupCommit(store)
    [first] = await started(group, "a")
    later = await started(group, "b", "c")
    assert store.commits == [["a"]]
    store.release.set()
    assert await first == [Committed(1)]
    assert [await task for task in later] == [[Committed(1)], [Committed(2)]]
    assert store.commits == [["a"], ["b", "c"]]


async def test_a_lone_batch_commits_at_once_with_all_its_changes() -> None:
    store = HeldStore()
    store.release.set()
    group = GroupCommit(store)
    outcomes = await group.commit([change("a"), change("b")])
    assert outcomes == [Committed(1), Committed(2)]
    assert store.commits == [["a", "b"]]


async def test_a_failed_commit_fails_its_batches_and_the_next_group_commits() -> None:
    store = HeldStore()
    group = GroupCommit(store)
    failing = await started(group, "a", "b")  # "a" commits alone, "b" waits for the next
    store.failing = StoreError("refused")
    store.release.set()
    for task in failing:
        with pytest.raises(StoreError, match="refused"):
            await task
    store.failing = None
    assert await group.commit([change("c")]) == [Committed(1)]
    assert store.commits == [["a"], ["b"], ["c"]]


async def test_a_caller_cancelled_while_waiting_does_not_cancel_the_others() -> None:
    store = HeldStore()
    group = GroupCommit(store)
    first, second = await started(group, "a", "b")
    first.cancel()
    store.release.set()
    assert await second == [Committed(1)]
    assert store.commits == [["a"], ["b"]]


async def test_a_lone_batch_commits_in_its_callers_task() -> None:
    committed_in: list[asyncio.Task[object] | None] = []

    class Noting:
        async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
            committed_in.append(asyncio.current_task())
            return [Committed(1) for _ in changes]

    caller = asyncio.create_task(GroupCommit(Noting()).commit([change("a")]))
    assert await caller == [Committed(1)]
    assert committed_in == [caller]


@pytest.mark.parametrize("begun", [False, True], ids=["before-it-began", "while-in-the-store"])
async def test_a_cancelled_shared_commit_is_unavailable_to_its_callers(begun: bool) -> None:
    store = HeldStore()
    group = GroupCommit(store)
    alone, waiting = await started(group, "a", "b")  # "b" waits for a shared commit
    alone.cancel()  # "a" commits alone: cancelled with its caller, and "b" goes next
    with pytest.raises(asyncio.CancelledError):
        await alone
    if begun:
        await asyncio.sleep(0)
        assert store.commits == [["a"], ["b"]]
    assert group._in_flight is not None
    group._in_flight.cancel()
    with pytest.raises(StoreUnavailableError):
        await waiting


class ShardedStore(HeldStore):
    """Partitions 0-3 on server 0, the rest on server 1, which fails if told."""

    def __init__(self) -> None:
        super().__init__()
        self.failing_server: int | None = None

    def server_of(self, partition: int) -> int:
        return 0 if partition < 4 else 1

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        servers = {self.server_of(c.partition) for c in changes}
        assert len(servers) == 1, "a transaction spanning two servers"
        if servers == {self.failing_server}:
            self.commits.append([c.command_id for c in changes])
            raise StoreUnavailableError("server 1 is down")
        return await super().commit(changes)


async def test_on_a_sharded_store_each_server_s_share_commits_on_its_own() -> None:
    store = ShardedStore()
    group = GroupCommit(store)
    [first] = await started(group, "a")
    batches = [
        asyncio.create_task(group.commit([replace(change(label), partition=partition)]))
        for label, partition in (("b", 1), ("c", 6), ("d", 2), ("e", 7))
    ]
    await asyncio.sleep(0)
    store.failing_server = 1
    store.release.set()
    assert await first == [Committed(1)]
    b, c, d, e = batches
    assert (await b, await d) == ([Committed(1)], [Committed(2)])
    for failed in (c, e):
        with pytest.raises(StoreUnavailableError, match="server 1"):
            await failed
    assert sorted(store.commits) == [["a"], ["b", "d"], ["c", "e"]]
