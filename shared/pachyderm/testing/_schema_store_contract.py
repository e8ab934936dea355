"""The event store contract, schema evolution: events keep the version of their type they
were written with, snapshots the fingerprint of the code that took them.

The store never interprets either: it keeps what it is given and gives it back on
every read (load, history, the log).
"""

from __future__ import annotations

import uuid

from .._reference import Ref
from ..store import Change, Committed, Conflict, EventStore, NewEvent, Snapshot


def counter(key: str) -> Ref:
    return Ref.from_key("counter", key)


def _events(*versions: int) -> tuple[NewEvent, ...]:
    return tuple(NewEvent(f"e{v}", b"x", v) for v in versions)


class SchemaStoreContract:
    """Schema versions of events and fingerprints of snapshots, on every read."""

    async def test_events_are_at_schema_version_1_unless_given_another(
        self, store: EventStore
    ) -> None:
        ref = counter("plain")
        await store.commit([Change(ref, 0, "c1", (NewEvent("a", b"a"),))])
        assert [e.schema_version for e in (await store.load(ref)).events] == [1]

    async def test_every_read_gives_each_event_its_schema_version(self, store: EventStore) -> None:
        first, second, third = counter("v1"), counter("v2"), counter("v3")
        outcomes = await store.commit(
            [
                Change(first, 0, "c1", _events(1, 3), partition=2),
                Change(counter("absent"), 5, "stale", _events(7), partition=2),  # refused
                Change(second, 0, "c2", _events(2), partition=2),
                Change(first, 2, "c3", _events(1, 4, 1), partition=2),
                Change(third, 0, "c4", _events(1), partition=2),
            ]
        )
        assert [type(outcome) for outcome in outcomes] == [
            Committed,
            Conflict,
            Committed,
            Committed,
            Committed,
        ]
        loaded = await store.load(first)
        assert [(e.version, e.schema_version) for e in loaded.events] == [
            (1, 1),
            (2, 3),
            (3, 1),
            (4, 4),
            (5, 1),
        ]
        assert [e.schema_version for e in await store.history(first.id, 2, 2)] == [3, 1]
        assert [e.schema_version for e in (await store.load(second)).events] == [2]
        logged = await store.read_log(2, 0, 100)
        # The log orders the batch's entities as it likes, each entity's events in order.
        by_entity: dict[uuid.UUID, list[tuple[int, int]]] = {}
        for item in logged:
            by_entity.setdefault(item.event.entity_id, []).append(
                (item.event.version, item.event.schema_version)
            )
        assert by_entity == {
            first.id: [(1, 1), (2, 3), (3, 1), (4, 4), (5, 1)],
            second.id: [(1, 2)],
            third.id: [(1, 1)],
        }

    async def test_a_snapshot_keeps_its_fingerprint(self, store: EventStore) -> None:
        ref = counter("fingerprinted")
        await store.commit([Change(ref, 0, "c1", _events(1), snapshot=Snapshot(1, b"s1", "v=2"))])
        assert (await store.load(ref)).snapshot == Snapshot(1, b"s1", "v=2")
        assert (await store.load(ref, use_snapshot=False)).snapshot is None

    async def test_a_snapshot_without_a_fingerprint_loads_without_one(
        self, store: EventStore
    ) -> None:
        ref = counter("unfingerprinted")
        await store.commit([Change(ref, 0, "c1", _events(1), snapshot=Snapshot(1, b"s1"))])
        assert (await store.load(ref)).snapshot == Snapshot(1, b"s1", None)

    async def test_a_newer_snapshot_replaces_the_fingerprint_too(self, store: EventStore) -> None:
        ref = counter("replaced")
        await store.commit([Change(ref, 0, "c1", _events(1), snapshot=Snapshot(1, b"old", "a"))])
        await store.commit([Change(ref, 1, "c2", _events(2), snapshot=Snapshot(2, b"new", "b"))])
        assert (await store.load(ref)).snapshot == Snapshot(2, b"new", "b")
        await store.commit([Change(ref, 2, "c3", _events(1), snapshot=Snapshot(3, b"none"))])
        assert (await store.load(ref)).snapshot == Snapshot(3, b"none", None)

    async def test_a_snapshot_not_written_leaves_the_stored_fingerprint(
        self, store: EventStore
    ) -> None:
        ref = counter("kept")
        await store.commit([Change(ref, 0, "c1", _events(1), snapshot=Snapshot(1, b"s", "a"))])
        # Same version: not newer, so not written; nor is its fingerprint.
        await store.commit([Change(ref, 1, "c2", (), snapshot=Snapshot(1, b"t", "b"))])
        # A conflicting change writes nothing at all.
        await store.commit([Change(ref, 0, "c3", _events(1), snapshot=Snapshot(1, b"u", "c"))])
        assert (await store.load(ref)).snapshot == Snapshot(1, b"s", "a")

    async def test_in_one_batch_the_newest_snapshot_stands_with_its_fingerprint(
        self, store: EventStore
    ) -> None:
        ref = counter("batched")
        await store.commit(
            [
                Change(ref, 0, "c1", _events(1), snapshot=Snapshot(1, b"s1", "a")),
                Change(ref, 1, "c2", _events(2, 2), snapshot=Snapshot(3, b"s3", "b")),
                Change(ref, 3, "c3", _events(1)),
            ]
        )
        loaded = await store.load(ref)
        assert loaded.snapshot == Snapshot(3, b"s3", "b")
        assert [(e.version, e.schema_version) for e in loaded.events] == [(4, 1)]
