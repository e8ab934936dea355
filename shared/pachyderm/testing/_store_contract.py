"""The event store contract: every backend, ours or a third party's, runs these same tests.

Invariant: the suite uses only the public :mod:`pachyderm` and
:mod:`pachyderm.store` APIs (never ``tests/`` or ``examples/``), so a backend
that passes it behaves as PostgreSQL and SQLite do in every way the worker
relies on. It needs pytest and pytest-asyncio, which is why
:mod:`pachyderm.testing` loads it only on first use.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from .. import EntityTypeMismatchError, Ref, StoreError
from ..store import (
    Change,
    CommitOutcome,
    Committed,
    Conflict,
    Duplicate,
    EventStore,
    NewEffect,
    NewEvent,
    Snapshot,
)
from ._ending_store_contract import EndingStoreContract
from ._listing_store_contract import ListingStoreContract
from ._log_store_contract import LogStoreContract
from ._quarantine_store_contract import QuarantineStoreContract
from ._retention_store_contract import RetentionStoreContract
from ._schema_store_contract import SchemaStoreContract
from ._timer_store_contract import TimerStoreContract

StoreFactory = Callable[[], Awaitable[EventStore]]
"""The ``open_store`` fixture's value: an async factory of stores on one namespace."""


def counter(key: str = "a") -> Ref:
    return Ref.from_key("counter", key)


def events(*names: str) -> tuple[NewEvent, ...]:
    return tuple(NewEvent(name, name.encode()) for name in names)


def effect(tag: str) -> NewEffect:
    return NewEffect(uuid.uuid4(), f"effect.{tag}", tag.encode())


class EventStoreContract(
    TimerStoreContract,
    LogStoreContract,
    ListingStoreContract,
    RetentionStoreContract,
    SchemaStoreContract,
    EndingStoreContract,
    QuarantineStoreContract,
):
    """The tests every :class:`~pachyderm.store.EventStore` backend must pass.

    Subclass it in a test module, under a name pytest collects (``Test...``),
    and define the ``open_store`` fixture, a :data:`StoreFactory`: each call
    returns a new, migrated store (a connection of its own, for the race tests)
    on one namespace that is empty when the test starts, and the fixture
    closes them all at teardown::

        class TestMyEventStore(EventStoreContract):
            @pytest.fixture
            async def open_store(self, tmp_path) -> AsyncIterator[StoreFactory]:
                async with my_store_factory(tmp_path) as factory:
                    yield factory

    The tests are coroutines: run them with pytest-asyncio in auto mode
    (``asyncio_mode = "auto"``).
    """

    @pytest.fixture
    async def store(self, open_store: StoreFactory) -> EventStore:
        return await open_store()

    # -- loading -----------------------------------------------------------

    async def test_unknown_entity_loads_empty_at_version_zero(self, store: EventStore) -> None:
        loaded = await store.load(counter())
        assert (loaded.version, loaded.snapshot, list(loaded.events)) == (0, None, [])

    async def test_committed_events_load_back_in_order(self, store: EventStore) -> None:
        ref = counter()
        outcomes = await store.commit([Change(ref, 0, "c1", events("a", "b", "c"), b"r1")])
        assert outcomes == [Committed(3)]
        loaded = await store.load(ref)
        assert [(e.version, e.name, e.data) for e in loaded.events] == [
            (1, "a", b"a"),
            (2, "b", b"b"),
            (3, "c", b"c"),
        ]
        assert {e.command_id for e in loaded.events} == {"c1"}
        assert all(e.entity_id == ref.id for e in loaded.events)
        assert all(e.recorded_at.tzinfo is not None for e in loaded.events)
        assert loaded.version == 3

    async def test_binary_payloads_survive_byte_for_byte(self, store: EventStore) -> None:
        payload = bytes(range(256)) * 64
        await store.commit([Change(counter(), 0, "c1", [NewEvent("blob", payload)])])
        assert (await store.load(counter())).events[0].data == payload

    async def test_loading_as_another_type_is_refused(self, store: EventStore) -> None:
        ref = counter()
        await store.commit([Change(ref, 0, "c1", events("a"))])
        with pytest.raises(EntityTypeMismatchError, match="counter"):
            await store.load(Ref("account", ref.id))

    # -- the version check ---------------------------------------------------

    async def test_stale_change_conflicts_and_writes_nothing(self, store: EventStore) -> None:
        ref = counter()
        await store.commit([Change(ref, 0, "c1", events("a", "b"))])
        stale = Change(ref, 1, "c2", events("x"), b"r", [effect("x")])
        assert await store.commit([stale]) == [Conflict(2)]
        assert [e.name for e in (await store.load(ref)).events] == ["a", "b"]
        assert await store.pending_effects() == []
        # The conflicting command id was not recorded: it can commit later.
        assert await store.commit([Change(ref, 2, "c2", events("y"))]) == [Committed(3)]

    async def test_creating_an_existing_entity_conflicts(self, store: EventStore) -> None:
        ref = counter()
        await store.commit([Change(ref, 0, "c1", events("a"))])
        assert await store.commit([Change(ref, 0, "c2", events("b"))]) == [Conflict(1)]

    async def test_expecting_a_version_of_a_missing_entity_conflicts(
        self, store: EventStore
    ) -> None:
        assert await store.commit([Change(counter(), 4, "c1", events("a"))]) == [Conflict(0)]
        assert (await store.load(counter())).version == 0

    async def test_committing_as_another_type_conflicts(self, store: EventStore) -> None:
        ref = counter()
        await store.commit([Change(ref, 0, "c1", events("a"))])
        other = Ref("account", ref.id)
        assert await store.commit([Change(other, 1, "c2", events("b"))]) == [Conflict(1)]
        assert await store.commit([Change(other, 0, "c3", events("b"))]) == [Conflict(1)]
        assert (await store.load(ref)).version == 1

    async def test_a_stale_change_does_not_stop_the_rest_of_the_batch(
        self, store: EventStore
    ) -> None:
        first, second, third = counter("1"), counter("2"), counter("3")
        await store.commit([Change(second, 0, "setup", events("s"))])
        outcomes = await store.commit(
            [
                Change(first, 0, "c1", events("a")),
                Change(second, 0, "c2", events("b"), b"", [effect("lost")]),
                Change(third, 0, "c3", events("c", "d"), b"", [effect("kept")]),
            ]
        )
        assert outcomes == [Committed(1), Conflict(1), Committed(2)]
        assert [e.destination for e in await store.pending_effects()] == ["effect.kept"]

    async def test_changes_to_one_entity_apply_in_batch_order(self, store: EventStore) -> None:
        ref = counter()
        outcomes = await store.commit(
            [
                Change(ref, 0, "c1", events("a", "b")),
                Change(ref, 2, "c2", events("c")),
                Change(ref, 3, "c3", events("d")),
            ]
        )
        assert outcomes == [Committed(2), Committed(3), Committed(4)]
        assert [(e.name, e.command_id) for e in (await store.load(ref)).events] == [
            ("a", "c1"),
            ("b", "c1"),
            ("c", "c2"),
            ("d", "c3"),
        ]

    async def test_a_change_built_on_a_conflicting_one_conflicts_too(
        self, store: EventStore
    ) -> None:
        ref, other = counter(), counter("other")
        await store.commit([Change(ref, 0, "c0", events("a"))])
        outcomes = await store.commit(
            [
                Change(ref, 0, "c1", events("b")),
                # c2 was computed on top of c1, which lost: even though its
                # expected version happens to be the real one, it must not commit.
                Change(ref, 1, "c2", events("c")),
                Change(other, 0, "c3", events("d")),
                Change(ref, 2, "c4", events("e")),
            ]
        )
        assert outcomes == [Conflict(1), Conflict(1), Committed(1), Conflict(1)]
        assert [e.name for e in await store.history(ref.id)] == ["a"]

    async def test_a_change_built_on_a_duplicate_is_refused_too(self, store: EventStore) -> None:
        ref = counter()
        await store.commit([Change(ref, 0, "c1", events("a"), b"r1")])
        outcomes = await store.commit(
            [
                Change(ref, 1, "c1", events("a"), b"r1"),
                Change(ref, 2, "c2", events("b")),
            ]
        )
        assert outcomes == [Duplicate(b"r1", 1), Conflict(1)]

    async def test_effect_only_change_checks_the_version_without_new_events(
        self, store: EventStore
    ) -> None:
        ref = counter()
        await store.commit([Change(ref, 0, "c1", events("a"))])
        assert await store.commit([Change(ref, 1, "c2", (), b"r", [effect("e")])]) == [Committed(1)]
        assert await store.commit([Change(ref, 0, "c3", (), b"r", [effect("f")])]) == [Conflict(1)]
        assert [e.destination for e in await store.pending_effects()] == ["effect.e"]
        assert await store.commit([Change(ref, 1, "c2", (), b"r")]) == [Duplicate(b"r", 1)]

    async def test_a_change_to_a_stored_version_zero_entity_commits(
        self, store: EventStore
    ) -> None:
        # A command that made no event still created the entity, at version 0.
        ref, other = counter(), counter("other")
        assert await store.commit([Change(ref, 0, "c1", (), b"r1", [effect("1")])]) == [
            Committed(0)
        ]
        assert await store.versions([ref.id]) == {ref.id: 0}
        assert await store.commit([Change(Ref("account", ref.id), 0, "c2", events("x"))]) == [
            Conflict(0)
        ]
        outcomes = await store.commit(
            [Change(ref, 0, "c3", events("a")), Change(other, 0, "c4", (), b"r4")]
        )
        assert outcomes == [Committed(1), Committed(0)]
        # Within one batch too: a change after one that left version 0.
        outcomes = await store.commit(
            [Change(other, 0, "c5", (), b"r5"), Change(other, 0, "c6", events("b"))]
        )
        assert outcomes == [Committed(0), Committed(1)]
        assert [e.name for e in await store.history(ref.id)] == ["a"]
        assert [e.name for e in await store.history(other.id)] == ["b"]
        assert await store.recorded([(other.id, "c4"), (other.id, "c5")]) == {
            (other.id, "c4"): Duplicate(b"r4", 0),
            (other.id, "c5"): Duplicate(b"r5", 0),
        }

    async def test_a_change_of_another_type_is_refused_within_a_batch(
        self, store: EventStore
    ) -> None:
        new, stored = counter("new"), counter("stored")
        await store.commit([Change(stored, 0, "s1", events("s"))])
        outcomes = await store.commit(
            [
                Change(new, 0, "c1", events("a")),
                # Right version, wrong type: the entity is a counter now.
                Change(Ref("account", new.id), 1, "c2", events("b")),
                Change(new, 1, "c3", events("c")),
                Change(Ref("account", stored.id), 1, "c4", events("d")),
                Change(stored, 1, "c5", events("e")),
            ]
        )
        assert outcomes == [Committed(1), Conflict(1), Conflict(1), Conflict(1), Conflict(1)]
        assert [e.name for e in await store.history(new.id)] == ["a"]
        assert [e.name for e in await store.history(stored.id)] == ["s"]
        # A new entity whose first change is of the wrong version is not created.
        missing = counter("missing")
        outcomes = await store.commit(
            [Change(missing, 1, "c6", events("f")), Change(missing, 0, "c7", events("g"))]
        )
        assert outcomes == [Conflict(0), Conflict(0)]
        assert await store.versions([missing.id]) == {}

    async def test_new_and_stored_entities_commit_together(self, store: EventStore) -> None:
        stored = [counter(f"stored{n}") for n in range(4)]
        new = [counter(f"new{n}") for n in range(4)]
        await store.commit(
            [Change(ref, 0, f"setup-{n}", events("s")) for n, ref in enumerate(stored)]
        )
        changes = []
        for n in range(4):
            changes.append(Change(new[n], 0, f"n{n}", events("a", "b"), b"", [effect(f"n{n}")]))
            changes.append(
                Change(stored[n], 1, f"s{n}", events("c"), snapshot=Snapshot(2, f"s{n}".encode()))
            )
        # The last stored entity is stale, the last new one expects a version it lacks.
        changes[-1] = Change(stored[3], 0, "s3", events("c"))
        changes[-2] = Change(new[3], 2, "n3", events("a"))
        outcomes = await store.commit(changes)
        assert outcomes == [Committed(2), Committed(2)] * 3 + [Conflict(0), Conflict(1)]
        assert await store.versions([ref.id for ref in stored + new]) == {
            **{ref.id: 2 for ref in stored[:3] + new[:3]},
            stored[3].id: 1,
        }
        # (Across entities the outbox order is the backend's: PostgreSQL sorts by entity.)
        pending = sorted(e.destination for e in await store.pending_effects())
        assert pending == ["effect.n0", "effect.n1", "effect.n2"]
        assert (await store.load(stored[1])).snapshot == Snapshot(2, b"s1")
        assert (await store.load(stored[3])).snapshot is None

    async def test_a_large_interleaved_batch_applies_each_entity_in_order(
        self, store: EventStore
    ) -> None:
        # 300 changes to 50 entities, six each, interleaved; half the entities
        # exist already. By entity number: 1 a stale change, 2 a command id
        # repeated within the batch, 3 a command id stored before the batch
        # (or, for a new entity, a change of another type), 4 effects and a
        # snapshot, 0 nothing special. Each entity stops at its first refusal.
        refs = [counter(f"e{k}") for k in range(50)]
        stored = {k for k in range(50) if k % 2 == 0}
        setup = [Change(refs[k], 0, f"{k}-setup", events("s"), b"setup") for k in sorted(stored)]
        await store.commit(setup)
        changes: dict[tuple[int, int], Change] = {}
        expected: dict[tuple[int, int], CommitOutcome] = {}
        for k, ref in enumerate(refs):
            base = 1 if k in stored else 0
            stopped_at: int | None = None
            for j in range(6):
                version = base + j  # the entity's version before change j, if all went well
                target, expected_version, command_id = ref, version, f"{k}-{j}"
                refusal: CommitOutcome | None = None
                if k % 5 == 1 and j == 3:
                    expected_version, refusal = version - 1, Conflict(version)
                elif k % 5 == 2 and j == 2:
                    command_id, refusal = f"{k}-0", Duplicate(f"reply {k}-0".encode(), base + 1)
                elif k % 5 == 3 and j == 4 and k in stored:
                    command_id, refusal = f"{k}-setup", Duplicate(b"setup", 1)
                elif k % 5 == 3 and j == 4:
                    target, refusal = Ref("account", ref.id), Conflict(version)
                special = k % 5 == 4
                changes[j, k] = Change(
                    target,
                    expected_version,
                    command_id,
                    events(f"{k}-{j}"),
                    f"reply {command_id}".encode(),
                    [effect(f"{k}-{j}")] if special else [],
                    Snapshot(version + 1, f"{k}@{version + 1}".encode()) if special else None,
                )
                if stopped_at is not None:
                    expected[j, k] = Conflict(stopped_at)
                elif refusal is not None:
                    expected[j, k], stopped_at = refusal, version
                else:
                    expected[j, k] = Committed(version + 1)
        # Round robin over the entities, every other round backwards.
        order = [(j, k) for j in range(6) for k in (range(50) if j % 2 else range(49, -1, -1))]
        outcomes = await store.commit([changes[key] for key in order])
        assert outcomes == [expected[key] for key in order]

        for k, ref in enumerate(refs):
            committed = [j for j in range(6) if isinstance(expected[j, k], Committed)]
            history = await store.history(ref.id)
            assert [(e.version, e.command_id) for e in history] == [(1, f"{k}-setup")] * (
                k in stored
            ) + [(changes[j, k].new_version, f"{k}-{j}") for j in committed]
            loaded = await store.load(ref)
            assert loaded.version == (1 if k in stored else 0) + len(committed)
            if k % 5 == 4:
                assert loaded.snapshot == Snapshot(loaded.version, f"{k}@{loaded.version}".encode())
            else:
                assert loaded.snapshot is None
        assert len(await store.pending_effects(limit=1000)) == 10 * 6

    # -- command ids ---------------------------------------------------------

    async def test_a_seen_command_id_returns_the_stored_reply_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        ref = counter()
        await store.commit([Change(ref, 0, "c1", events("a"), b"first reply", [effect("e")])])
        again = Change(ref, 1, "c1", events("a"), b"second reply", [effect("e2")])
        assert await store.commit([again]) == [Duplicate(b"first reply", 1)]
        stale_again = Change(ref, 0, "c1", events("a"), b"third reply")
        assert await store.commit([stale_again]) == [Duplicate(b"first reply", 1)]
        assert (await store.load(ref)).version == 1
        assert len(await store.pending_effects()) == 1

    async def test_a_command_id_repeated_within_one_batch_applies_once(
        self, store: EventStore
    ) -> None:
        ref = counter()
        outcomes = await store.commit(
            [
                Change(ref, 0, "c1", events("a"), b"reply"),
                Change(ref, 1, "c1", events("a"), b"other"),
            ]
        )
        assert outcomes == [Committed(1), Duplicate(b"reply", 1)]

    async def test_a_command_id_repeated_after_other_committed_changes_is_a_duplicate(
        self, store: EventStore
    ) -> None:
        ref = counter()
        await store.commit([Change(ref, 0, "c0", events("a"), b"r0")])
        outcomes = await store.commit(
            [
                Change(ref, 1, "c1", events("b", "c"), b"r1", [effect("1")]),
                Change(ref, 3, "c2", events("d"), b"r2"),
                # A redelivery of c1 computed on top of c2: answered from c1.
                Change(ref, 4, "c1", events("e"), b"other", [effect("lost")]),
                Change(ref, 4, "c3", events("f"), b"r3"),
                # Already stored before the batch: also a duplicate, but this
                # entity's changes are refused from c1's repeat on.
                Change(ref, 4, "c0", events("g"), b"r0"),
            ]
        )
        assert outcomes == [
            Committed(3),
            Committed(4),
            Duplicate(b"r1", 3),
            Conflict(4),
            Conflict(4),
        ]
        assert [(e.name, e.command_id) for e in await store.history(ref.id)] == [
            ("a", "c0"),
            ("b", "c1"),
            ("c", "c1"),
            ("d", "c2"),
        ]
        assert [e.destination for e in await store.pending_effects()] == ["effect.1"]
        # c3 was refused, not recorded: it may commit later.
        assert await store.commit([Change(ref, 4, "c3", events("f"), b"r3")]) == [Committed(5)]

    async def test_recorded_finds_stored_replies_without_writing(self, store: EventStore) -> None:
        first, second = counter("1"), counter("2")
        await store.commit(
            [
                Change(first, 0, "c1", events("a"), b"one"),
                Change(second, 0, "c2", events("a", "b"), b"two"),
            ]
        )
        found = await store.recorded([(first.id, "c1"), (second.id, "c2"), (first.id, "c2")])
        assert found == {
            (first.id, "c1"): Duplicate(b"one", 1),
            (second.id, "c2"): Duplicate(b"two", 2),
        }
        assert await store.recorded([]) == {}

    async def test_command_ids_are_scoped_to_their_entity(self, store: EventStore) -> None:
        outcomes = await store.commit(
            [
                Change(counter("1"), 0, "same", events("a"), b"one"),
                Change(counter("2"), 0, "same", events("a"), b"two"),
            ]
        )
        assert outcomes == [Committed(1), Committed(1)]
        again = await store.commit([Change(counter("2"), 1, "same", events("a"))])
        assert again == [Duplicate(b"two", 1)]

    # -- snapshots -------------------------------------------------------------

    async def test_load_starts_from_the_latest_snapshot(self, store: EventStore) -> None:
        ref = counter()
        await store.commit(
            [
                Change(ref, 0, "c1", events("a", "b"), snapshot=Snapshot(2, b"state@2")),
                Change(ref, 2, "c2", events("c")),
                Change(ref, 3, "c3", events("d"), snapshot=Snapshot(4, b"state@4")),
                Change(ref, 4, "c4", events("e")),
            ]
        )
        loaded = await store.load(ref)
        assert loaded.snapshot == Snapshot(4, b"state@4")
        assert [e.version for e in loaded.events] == [5]
        assert loaded.version == 5
        full = await store.load(ref, use_snapshot=False)
        assert full.snapshot is None
        assert [e.version for e in full.events] == [1, 2, 3, 4, 5]

    async def test_a_snapshot_of_a_conflicting_change_is_not_written(
        self, store: EventStore
    ) -> None:
        ref = counter()
        await store.commit([Change(ref, 0, "c1", events("a"), snapshot=Snapshot(1, b"good"))])
        stale = Change(ref, 0, "c2", events("x"), snapshot=Snapshot(1, b"bad"))
        assert await store.commit([stale]) == [Conflict(1)]
        assert (await store.load(ref)).snapshot == Snapshot(1, b"good")

    async def test_a_snapshot_replaces_only_an_older_one(self, store: EventStore) -> None:
        ref = counter()
        outcomes = await store.commit(
            [
                Change(ref, 0, "c1", events("a"), snapshot=Snapshot(1, b"first")),
                # No events: the version stays, and so the stored snapshot.
                Change(ref, 1, "c2", (), snapshot=Snapshot(1, b"second")),
            ]
        )
        assert outcomes == [Committed(1), Committed(1)]
        assert (await store.load(ref)).snapshot == Snapshot(1, b"first")
        later = Change(ref, 1, "c3", (), snapshot=Snapshot(1, b"third"))
        assert await store.commit([later]) == [Committed(1)]
        assert (await store.load(ref)).snapshot == Snapshot(1, b"first")
        newer = Change(ref, 1, "c4", events("b"), snapshot=Snapshot(2, b"newer"))
        assert await store.commit([newer]) == [Committed(2)]
        assert (await store.load(ref)).snapshot == Snapshot(2, b"newer")

    def test_a_snapshot_must_match_the_new_version(self) -> None:
        with pytest.raises(ValueError, match="snapshot"):
            Change(counter(), 0, "c1", events("a"), snapshot=Snapshot(3, b"s"))

    async def test_versions_reports_current_versions_of_known_entities(
        self, store: EventStore
    ) -> None:
        first, second, unknown = counter("1"), counter("2"), counter("3")
        await store.commit(
            [
                Change(first, 0, "c1", events("a", "b")),
                Change(second, 0, "c2", events("a")),
            ]
        )
        found = await store.versions([first.id, second.id, unknown.id])
        assert found == {first.id: 2, second.id: 1}
        assert await store.versions([]) == {}

    # -- history ---------------------------------------------------------------

    async def test_history_reads_from_a_version_with_a_limit(self, store: EventStore) -> None:
        ref = counter()
        names = [f"e{n}" for n in range(1, 11)]
        await store.commit([Change(ref, 0, "c1", events(*names), snapshot=Snapshot(10, b"s"))])
        assert [e.version for e in await store.history(ref.id)] == list(range(1, 11))
        assert [e.name for e in await store.history(ref.id, 4, limit=3)] == ["e4", "e5", "e6"]
        assert await store.history(ref.id, 11) == []
        assert await store.history(uuid.uuid4()) == []

    # -- the outbox --------------------------------------------------------------

    async def test_effects_wait_in_the_outbox_until_marked_published(
        self, store: EventStore
    ) -> None:
        ref = counter()
        first, second, third = effect("1"), effect("2"), effect("3")
        await store.commit([Change(ref, 0, "c1", events("a"), b"", [first, second])])
        await store.commit([Change(ref, 1, "c2", events("b"), b"", [third])])
        pending = await store.pending_effects()
        assert [e.effect_id for e in pending] == [
            first.effect_id,
            second.effect_id,
            third.effect_id,
        ]
        assert [(e.entity_id, e.command_id) for e in pending] == [
            (ref.id, "c1"),
            (ref.id, "c1"),
            (ref.id, "c2"),
        ]
        assert (pending[0].destination, pending[0].payload) == ("effect.1", b"1")
        assert [e.effect_id for e in await store.pending_effects(limit=1)] == [first.effect_id]
        await store.mark_published([first.effect_id, third.effect_id])
        assert [e.effect_id for e in await store.pending_effects()] == [second.effect_id]
        await store.mark_published([second.effect_id, second.effect_id])
        assert await store.pending_effects() == []

    async def test_effects_of_one_batch_wait_in_the_order_they_were_made(
        self, store: EventStore
    ) -> None:
        ref = counter()
        made = [effect(str(n)) for n in range(5)]
        await store.commit(
            [
                Change(ref, 0, "c1", events("a"), b"", made[:2]),
                Change(ref, 1, "c2", events("b"), b"", made[2:3]),
                Change(ref, 2, "c3", (), b"", made[3:]),
            ]
        )
        assert [e.effect_id for e in await store.pending_effects()] == [e.effect_id for e in made]

    async def test_recent_effects_can_be_left_to_their_publisher(self, store: EventStore) -> None:
        await store.commit([Change(counter(), 0, "c1", events("a"), b"", [effect("e")])])
        assert await store.pending_effects(older_than=60) == []
        await asyncio.sleep(0.05)
        assert len(await store.pending_effects(older_than=0.01)) == 1

    async def test_a_postponed_effect_lets_the_ones_behind_it_through(
        self, store: EventStore
    ) -> None:
        ref = counter()
        stuck, behind = effect("stuck"), effect("behind")
        await store.commit([Change(ref, 0, "c1", events("a"), b"", [stuck, behind])])
        await store.postpone_effects({stuck.effect_id: 60.0})
        # The oldest slot goes to the next effect, not to the one held back.
        assert [e.effect_id for e in await store.pending_effects(limit=1)] == [behind.effect_id]
        await store.mark_published([behind.effect_id])
        assert await store.pending_effects() == []

    async def test_a_postponed_effect_comes_back_counting_its_attempts(
        self, store: EventStore
    ) -> None:
        ref = counter()
        made = effect("e")
        await store.commit([Change(ref, 0, "c1", events("a"), b"", [made])])
        assert [e.attempts for e in await store.pending_effects()] == [0]
        # Half a second: long enough for a loaded machine (or a store spread over several
        # servers) to ask again before it is due.
        await store.postpone_effects({made.effect_id: 0.5})
        await store.postpone_effects({made.effect_id: 0.5, uuid.uuid4(): 1.0})
        assert await store.pending_effects() == []
        await asyncio.sleep(0.6)
        assert [e.attempts for e in await store.pending_effects()] == [2]

    async def test_effects_keep_the_trace_context_of_their_command(self, store: EventStore) -> None:
        trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        traced, plain = effect("traced"), effect("plain")
        await store.commit(
            [
                Change(counter("t"), 0, "c1", events("a"), b"", [traced], trace=trace),
                Change(counter("p"), 0, "c2", events("a"), b"", [plain]),
            ]
        )
        found = {e.destination: e.trace for e in await store.pending_effects()}
        assert found == {"effect.traced": trace, "effect.plain": None}

    async def test_postponing_a_published_effect_changes_nothing(self, store: EventStore) -> None:
        made = effect("e")
        await store.commit([Change(counter(), 0, "c1", events("a"), b"", [made])])
        await store.mark_published([made.effect_id])
        await store.postpone_effects({made.effect_id: 0.0})
        await store.postpone_effects({})
        assert await store.pending_effects() == []

    # -- atomicity -----------------------------------------------------------------

    async def test_a_batch_that_fails_as_a_whole_writes_nothing(self, store: EventStore) -> None:
        clash = effect("same")
        with pytest.raises(StoreError):
            await store.commit(
                [
                    Change(counter("1"), 0, "c1", events("a"), b"", [clash]),
                    Change(counter("2"), 0, "c2", events("b"), b"", [clash]),
                ]
            )
        assert (await store.load(counter("1"))).version == 0
        assert (await store.load(counter("2"))).version == 0
        assert await store.pending_effects() == []

    async def test_an_empty_batch_commits_nothing(self, store: EventStore) -> None:
        assert await store.commit([]) == []

    # -- schema ------------------------------------------------------------------------

    async def test_migrating_again_is_harmless(self, store: EventStore) -> None:
        await store.commit([Change(counter(), 0, "c1", events("a"))])
        version = await store.migrate()
        assert version >= 1
        assert await store.migrate() == version
        assert (await store.load(counter())).version == 1

    # -- concurrency -------------------------------------------------------------------

    async def test_racing_writers_each_version_has_exactly_one_winner(
        self, open_store: StoreFactory
    ) -> None:
        writers, rounds = 8, 15
        stores = [await open_store() for _ in range(writers)]
        ref = counter("contended")
        wins: list[tuple[int, str]] = []
        conflicts = 0

        async def writer(number: int, store: EventStore) -> None:
            nonlocal conflicts
            for attempt in range(rounds):
                version = (await store.load(ref)).version
                command_id = f"w{number}-{attempt}"
                change = Change(ref, version, command_id, [NewEvent("e", command_id.encode())])
                [outcome] = await store.commit([change])
                if isinstance(outcome, Committed):
                    assert outcome.version == version + 1
                    wins.append((outcome.version, command_id))
                else:
                    assert isinstance(outcome, Conflict)
                    assert outcome.actual_version > version
                    conflicts += 1

        await asyncio.gather(*(writer(n, s) for n, s in enumerate(stores)))
        history = await stores[0].history(ref.id)
        assert [e.version for e in history] == list(range(1, len(history) + 1))
        assert sorted(wins) == [(e.version, e.command_id) for e in history]
        assert len(wins) + conflicts == writers * rounds
        assert conflicts > 0, "the writers never overlapped: the race did not happen"
