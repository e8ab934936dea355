"""The end-of-life part of the event store contract (mixed into :class:`EventStoreContract`).

Invariants: no change commits to an ended or erased entity (only a recorded
command id still answers, as a duplicate); an ending change keeps its snapshot
and drops its entity's timers; erasure leaves nothing of an entity but its
tombstone; a change that writes nothing but its reply creates no entity; pruning
an ended entity's history keeps its final snapshot and never touches a live one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from .. import EntityTypeMismatchError, Ref
from ..store import (
    ENDED,
    ERASED,
    ERASED_VERSION,
    Change,
    Committed,
    Conflict,
    Duplicate,
    Ended,
    EventStore,
    HasQuarantine,
    NewEffect,
    NewEvent,
    Quarantined,
    Snapshot,
    TimerWrite,
)


def _ref(key: str) -> Ref:
    return Ref.from_key("member", key)


def _events(*names: str) -> tuple[NewEvent, ...]:
    return tuple(NewEvent(name, name.encode()) for name in names)


def _timer(key: str) -> TimerWrite:
    return TimerWrite(key, datetime.now(UTC) + timedelta(hours=1), "s", b"t")


async def _ended(store: EventStore, ref: Ref, history: int = 2) -> None:
    """``ref`` with ``history`` events, the last of which ended it (snapshot at the end)."""
    names = [f"e{n}" for n in range(1, history)]
    await store.commit([Change(ref, 0, "start", _events(*names), timers=[_timer("k")])])
    await store.commit(
        [
            Change(
                ref,
                history - 1,
                "end",
                _events("closed"),
                b"bye",
                snapshot=Snapshot(history, b"final"),
                ends=True,
            )
        ]
    )


class EndingStoreContract:
    """End-of-life tests every :class:`~pachyderm.store.EventStore` backend must pass."""

    async def test_an_ended_entity_refuses_every_later_change(self, store: EventStore) -> None:
        ref = _ref("a")
        await _ended(store, ref)
        loaded = await store.load(ref)
        assert (loaded.ended, loaded.version) == (ENDED, 2)
        assert loaded.snapshot == Snapshot(2, b"final", None)
        outcomes = await store.commit(
            [Change(ref, 2, "later", _events("x")), Change(_ref("b"), 0, "b", _events("x"))]
        )
        assert outcomes == [Ended(2, ENDED), Committed(1)]
        assert await store.commit([Change(ref, 2, "reply-only", (), b"r")]) == [Ended(2, ENDED)]
        # The command that ended it is still answered with its own reply.
        assert await store.commit([Change(ref, 2, "end", (), b"?")]) == [Duplicate(b"bye", 2)]
        assert [e.name for e in await store.history(ref.id)] == ["e1", "closed"]
        assert await store.entity_timers(ref.id) == []
        assert await store.versions([ref.id]) == {ref.id: 2}

    async def test_an_ending_change_refused_as_stale_ends_nothing(self, store: EventStore) -> None:
        ref = _ref("a")
        await store.commit([Change(ref, 0, "c1", _events("a", "b"))])
        assert await store.commit([Change(ref, 1, "end", _events("z"), ends=True)]) == [Conflict(2)]
        assert (await store.load(ref)).ended is None
        assert await store.commit([Change(ref, 2, "c2", _events("c"))]) == [Committed(3)]

    async def test_erasure_leaves_nothing_but_a_tombstone(self, store: EventStore) -> None:
        ref, other = _ref("a"), _ref("b")
        effect = NewEffect(uuid.uuid4(), "effect.mail", b"secret")
        pending = NewEffect(uuid.uuid4(), "effect.mail", b"owed")
        await store.commit(
            [
                Change(ref, 0, "c1", _events("a", "b"), b"r1", [effect], timers=[_timer("k")]),
                Change(ref, 2, "c2", _events("c"), b"r2", [pending], Snapshot(3, b"s")),
                Change(other, 0, "o1", _events("a"), partition=0),
            ]
        )
        await store.mark_published([effect.effect_id])
        erasure = await store.erase(ref)
        assert (erasure.entity_id, erasure.entity_type, erasure.version) == (ref.id, "member", 3)
        assert (erasure.events, erasure.snapshots, erasure.commands) == (3, 1, 2)
        assert (erasure.timers, erasure.log_rows, erasure.effects) == (1, 3, 1)
        loaded = await store.load(ref)
        assert (loaded.ended, loaded.version, loaded.snapshot) == (ERASED, ERASED_VERSION, None)
        assert list(loaded.events) == []
        assert await store.history(ref.id) == []
        assert await store.recorded([(ref.id, "c1"), (ref.id, "c2")]) == {}
        assert await store.entity_timers(ref.id) == []
        assert [e.event.entity_id for e in await store.read_log(0, 0, 100)] == [other.id]
        # The unpublished effect was owed before the erasure: it is still delivered.
        assert [e.effect_id for e in await store.pending_effects()] == [pending.effect_id]
        assert await store.versions([ref.id, other.id]) == {ref.id: ERASED_VERSION, other.id: 1}
        assert [e.entity_id for e in await store.list_entities("member")] == [other.id]
        for expected in (0, 3, ERASED_VERSION):
            outcome = await store.commit([Change(ref, max(expected, 0), "new", _events("x"))])
            assert outcome == [Ended(ERASED_VERSION, ERASED)]
        assert await store.commit([Change(ref, 0, "c1", (), b"r")]) == [
            Ended(ERASED_VERSION, ERASED)
        ]
        again = await store.erase(ref)
        assert (again.version, again.events, again.commands, again.log_rows) == (3, 0, 0, 0)

    async def test_no_change_commits_after_an_erasure_that_races_it(
        self, open_store: Callable[[], Awaitable[EventStore]]
    ) -> None:
        writer, eraser = await open_store(), await open_store()
        for round_ in range(10):
            ref = _ref(f"race-{round_}")
            await writer.commit([Change(ref, 0, "c0", _events("a"))])
            outcomes, _ = await asyncio.gather(
                writer.commit([Change(ref, 1, "c1", _events("b"))]),
                eraser.erase(ref),
            )
            # Whichever came first, nothing of the entity is left but its tombstone.
            assert outcomes in ([Committed(2)], [Ended(ERASED_VERSION, ERASED)])
            assert await writer.history(ref.id) == []
            assert await writer.commit([Change(ref, 2, "late", _events("c"))]) == [
                Ended(ERASED_VERSION, ERASED)
            ]

    async def test_erasure_deletes_the_entity_s_quarantined_commands(
        self, store: EventStore
    ) -> None:
        if not isinstance(store, HasQuarantine):
            pytest.skip("the store keeps no quarantine")
        ref, quarantine = _ref("poisoned"), store.quarantine_store()
        await store.commit([Change(ref, 0, "c0", _events("a"))])
        await quarantine.count_attempts([(ref.id, "c1")])
        entry = Quarantined(ref.id, "c1", "member", 0, "park", "quarantined", 3, "hung", b"data")
        await quarantine.quarantine([entry])
        erasure = await store.erase(ref)
        assert erasure.quarantined == 2  # the quarantined command and its attempt count
        assert await quarantine.find(ref.id, "c1") is None
        assert await quarantine.attempts([(ref.id, "c1")]) == {}

    async def test_erasing_an_unknown_id_leaves_a_tombstone_that_claims_it(
        self, store: EventStore
    ) -> None:
        ref = _ref("never")
        await store.commit([Change(ref, 0, "rejected", (), b"no")])  # creates no entity
        erasure = await store.erase(ref)
        assert (erasure.version, erasure.commands) == (0, 1)
        assert await store.commit([Change(ref, 0, "c1", _events("a"))]) == [
            Ended(ERASED_VERSION, ERASED)
        ]
        with pytest.raises(EntityTypeMismatchError):
            await store.erase(Ref("account", ref.id))

    async def test_a_change_writing_only_its_reply_creates_no_entity(
        self, store: EventStore
    ) -> None:
        ref = _ref("a")
        assert await store.commit([Change(ref, 0, "no", (), b"rejected")]) == [Committed(0)]
        assert await store.versions([ref.id]) == {}
        assert (await store.load(ref)).version == 0
        assert await store.recorded([(ref.id, "no")]) == {(ref.id, "no"): Duplicate(b"rejected", 0)}
        assert await store.commit([Change(ref, 0, "no", (), b"other")]) == [
            Duplicate(b"rejected", 0)
        ]
        # Any type may still claim the id: nothing claimed it.
        claimed = Ref("account", ref.id)
        assert await store.commit([Change(claimed, 0, "c1", _events("a"))]) == [Committed(1)]
        assert await store.versions([ref.id]) == {ref.id: 1}

    async def test_a_reply_only_change_beside_one_that_writes_creates_the_entity(
        self, store: EventStore
    ) -> None:
        ref, effect = _ref("a"), NewEffect(uuid.uuid4(), "effect.x", b"")
        outcomes = await store.commit(
            [Change(ref, 0, "no", (), b"r"), Change(ref, 0, "yes", _events("a"))]
        )
        assert outcomes == [Committed(0), Committed(1)]
        # An effect is more than a reply: it needs the entity, at version 0.
        other = _ref("b")
        assert await store.commit([Change(other, 0, "fx", (), b"r", [effect])]) == [Committed(0)]
        assert await store.versions([ref.id, other.id]) == {ref.id: 1, other.id: 0}

    async def test_pruning_an_ended_history_keeps_the_final_snapshot(
        self, store: EventStore
    ) -> None:
        ended, live = _ref("ended"), _ref("live")
        await _ended(store, ended, history=5)
        await store.commit([Change(live, 0, "c", _events("a", "b"), snapshot=Snapshot(2, b"s"))])
        assert await store.count_prunable_ended() == 5
        assert await store.prune_ended(2) == 2
        assert [e.version for e in await store.history(ended.id)] == [3, 4, 5]
        assert await store.prune_ended(100) == 3
        assert await store.prune_ended(100) == 0
        assert await store.count_prunable_ended() == 0
        loaded = await store.load(ended)
        assert (loaded.ended, loaded.version, loaded.snapshot) == (
            ENDED,
            5,
            Snapshot(5, b"final", None),
        )
        assert loaded.events == ()
        assert await store.load(ended, use_snapshot=False) == loaded.__class__(
            ended, None, (), ENDED, 5
        )
        assert len(await store.history(live.id)) == 2
        with pytest.raises(ValueError, match="at least 1"):
            await store.prune_ended(0)

    async def test_the_log_reads_past_pruned_events(self, store: EventStore) -> None:
        # A projection reading after the pruned ones is not stalled by their positions.
        ended, later = _ref("ended"), _ref("later")
        await _ended(store, ended, history=3)
        await store.commit([Change(later, 0, "c", _events("a"))])
        assert [e.position for e in await store.read_log(0, 0, 10)] == [1, 2, 3, 4]
        assert await store.prune_ended(100) == 3
        [first] = await store.read_log(0, 0, 1)
        assert (first.position, first.event.entity_id) == (4, later.id)
        assert await store.log_heads() == {0: 4}
