"""The event log part of the event store contract (mixed into :class:`EventStoreContract`).

Invariant: what a backend must do with a committed change's events: append
them to the log of the change's partition at positions from 1, gap-free, in
commit order (a batch's in batch order), and never for a refused change; so a
reader that has read up to position n of a partition has missed nothing. And
a reader waiting on :meth:`~pachyderm.store.EventStore.log_wakeups` since
before a commit of its partition is woken by it, not by its timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .. import Ref
from ..store import Change, EventStore, NewEvent, event_id

Factory = Callable[[], Awaitable[EventStore]]


def _ref(key: str) -> Ref:
    return Ref.from_key("counter", key)


def _events(*names: str) -> tuple[NewEvent, ...]:
    return tuple(NewEvent(name, name.encode()) for name in names)


class LogStoreContract:
    """Event log tests every :class:`~pachyderm.store.EventStore` backend must pass."""

    async def test_committed_events_are_logged_in_batch_order(self, store: EventStore) -> None:
        a, b = _ref("a"), _ref("b")
        await store.commit(
            [
                Change(b, 0, "b1", _events("b1", "b2"), partition=2),
                Change(a, 0, "a1", _events("a1"), partition=2),
                Change(a, 1, "a2", _events("a2"), partition=2),
            ]
        )
        logged = await store.read_log(2, 0, 10)
        assert [(e.position, e.event.name) for e in logged] == [
            (1, "b1"),
            (2, "b2"),
            (3, "a1"),
            (4, "a2"),
        ]
        first = logged[0]
        assert (first.partition, first.entity_type, first.event.entity_id) == (2, "counter", b.id)
        assert (first.event.version, first.event.data, first.event.command_id) == (1, b"b1", "b1")
        assert first.event_id == event_id(b.id, 1)
        assert await store.log_heads() == {2: 4}

    async def test_the_log_continues_and_reads_after_a_position(self, store: EventStore) -> None:
        ref = _ref("c")
        await store.commit([Change(ref, 0, "c1", _events("x", "y"), partition=0)])
        await store.commit([Change(ref, 2, "c2", _events("z"), partition=0)])
        after = await store.read_log(0, 1, 10)
        assert [(e.position, e.event.name, e.event.version) for e in after] == [
            (2, "y", 2),
            (3, "z", 3),
        ]
        assert [e.position for e in await store.read_log(0, 0, 2)] == [1, 2]
        assert await store.read_log(0, 3, 10) == []
        assert await store.read_log(5, 0, 10) == []

    async def test_refused_and_eventless_changes_take_no_position(self, store: EventStore) -> None:
        ref = _ref("d")
        await store.commit([Change(ref, 0, "d1", _events("one"), partition=1)])
        outcomes = await store.commit(
            [
                Change(ref, 0, "stale", _events("never"), partition=1),
                Change(_ref("e"), 0, "quiet", partition=1),
                Change(_ref("f"), 0, "f1", _events("two"), partition=1),
            ]
        )
        assert len(outcomes) == 3
        assert [e.event.name for e in await store.read_log(1, 0, 10)] == ["one", "two"]
        assert await store.log_heads() == {1: 2}

    async def test_partitions_have_logs_of_their_own(self, store: EventStore) -> None:
        await store.commit(
            [
                Change(_ref("p0"), 0, "x", _events("zero"), partition=0),
                Change(_ref("p3"), 0, "y", _events("three"), partition=3),
            ]
        )
        assert [e.position for e in await store.read_log(0, 0, 10)] == [1]
        assert [e.position for e in await store.read_log(3, 0, 10)] == [1]

    async def test_concurrent_writers_leave_no_gap(self, open_store: Factory) -> None:
        stores = [await open_store() for _ in range(3)]

        async def write(store: EventStore, writer: int) -> None:
            for n in range(10):
                ref = _ref(f"w{writer}-{n}")
                await store.commit([Change(ref, 0, "c", _events("e1", "e2"), partition=7)])

        await asyncio.gather(*(write(store, n) for n, store in enumerate(stores)))
        logged = await stores[0].read_log(7, 0, 1000)
        assert [e.position for e in logged] == list(range(1, 61))
        entities = {e.event.entity_id for e in logged}
        assert len(entities) == 30
        for entity in entities:  # each entity's events in version order
            versions = [e.event.version for e in logged if e.event.entity_id == entity]
            assert versions == [1, 2]

    async def test_a_commit_wakes_a_reader_that_waits_since_before_it(
        self, store: EventStore
    ) -> None:
        wakeups = store.log_wakeups()
        seen = wakeups.generation(4)
        await store.commit([Change(_ref("wake"), 0, "w", _events("w1"), partition=4)])
        woken = asyncio.create_task(wakeups.wait(4, seen, 30.0))
        done, _ = await asyncio.wait({woken}, timeout=10.0)
        assert done, "the commit did not wake its partition's reader within 10 s"
        assert woken.result() is True
        await wakeups.close()
