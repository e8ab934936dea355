"""The quarantine part of the event store contract (mixed into :class:`EventStoreContract`).

Invariants: see :mod:`pachyderm.store._quarantine` (attempts counted per key
and forgotten; one quarantine row per command, back to ``quarantined`` only
from ``resuming``; parked commands in order, a re-parked id keeping its place;
operator decisions only on ``quarantined`` rows; what every store of the
namespace sees, since workers and operators use different connections).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from .._reference import Ref
from ..store import (
    Change,
    Committed,
    Duplicate,
    EventStore,
    Fenced,
    HasQuarantine,
    NewEvent,
    NotQuarantinedError,
    Parked,
    Quarantined,
    QuarantineStore,
)


def _quarantine_of(store: EventStore) -> QuarantineStore:
    assert isinstance(store, HasQuarantine), "the store keeps no quarantine"
    return store.quarantine_store()


def _bump(ref: Ref, version: int, command_id: str) -> Change:
    return Change(ref, version, command_id, [NewEvent("bumped", b"")], b"r-" + command_id.encode())


def _entry(entity_id: uuid.UUID, command_id: str = "c", *, partition: int = 3) -> Quarantined:
    return Quarantined(
        entity_id, command_id, "counter", partition, "park", "quarantined", 3, "hung", b"m"
    )


class QuarantineStoreContract:
    """Quarantine tests every shipped :class:`~pachyderm.store.EventStore` backend passes."""

    async def test_attempts_are_counted_per_command_and_forgotten(self, store: EventStore) -> None:
        quarantine = _quarantine_of(store)
        a, b = uuid.uuid4(), uuid.uuid4()
        assert await quarantine.count_attempts([(a, "1"), (b, "1"), (a, "1")]) == {
            (a, "1"): 1,
            (b, "1"): 1,
        }
        assert await quarantine.count_attempts([(a, "1"), (a, "2")]) == {(a, "1"): 2, (a, "2"): 1}
        assert await quarantine.attempts([(a, "1"), (b, "1"), (b, "2")]) == {
            (a, "1"): 2,
            (b, "1"): 1,
        }
        await quarantine.forget_attempts([(a, "1")])
        assert await quarantine.attempts([(a, "1")]) == {}
        assert await quarantine.count_attempts([(a, "1"), (b, "1")]) == {(a, "1"): 1, (b, "1"): 2}
        assert await quarantine.count_attempts([]) == {}
        assert await quarantine.attempts([]) == {}

    async def test_a_quarantined_command_is_kept_whole_and_listed_by_partition(
        self, store: EventStore, open_store: Callable[[], Awaitable[EventStore]]
    ) -> None:
        quarantine = _quarantine_of(store)
        first, second = uuid.uuid4(), uuid.uuid4()
        await quarantine.quarantine([_entry(first)])
        await quarantine.quarantine([_entry(second, partition=5)])
        # Another connection (an operator's) sees what a worker recorded.
        other = _quarantine_of(await open_store())
        listed = await other.quarantined()
        assert [(q.entity_id, q.partition, q.status, q.policy) for q in listed] == [
            (first, 3, "quarantined", "park"),
            (second, 5, "quarantined", "park"),
        ]
        assert listed[0].message == b"m"
        assert listed[0].attempts == 3
        assert listed[0].reason == "hung"
        assert listed[0].quarantined_at is not None
        assert [q.entity_id for q in await other.quarantined(partitions=[5])] == [second]
        assert await other.quarantined(partitions=[]) == []
        assert await other.find(first, "other") is None
        found = await other.find(first, "c")
        assert found is not None
        assert found.entity_type == "counter"

    async def test_later_commands_park_in_order_and_a_retry_keeps_its_place(
        self, store: EventStore
    ) -> None:
        quarantine = _quarantine_of(store)
        entity, other = uuid.uuid4(), uuid.uuid4()
        await quarantine.quarantine([_entry(entity)])
        await quarantine.park([Parked(entity, "2", b"two"), Parked(entity, "3", b"three")])
        await quarantine.park([Parked(other, "9", b"x"), Parked(entity, "2", b"two again")])
        await quarantine.park([Parked(entity, "4", b"four"), Parked(entity, "4", b"four again")])
        parked = await quarantine.parked(entity, 10)
        assert [(p.command_id, p.message) for p in parked] == [
            ("2", b"two again"),
            ("3", b"three"),
            ("4", b"four again"),
        ]
        assert [p.command_id for p in await quarantine.parked(entity, 2)] == ["2", "3"]
        found = await quarantine.find(entity, "c")
        assert found is not None
        assert found.parked == 3
        await quarantine.unpark([parked[0].position, parked[1].position])
        assert [p.command_id for p in await quarantine.parked(entity, 10)] == ["4"]
        assert [p.command_id for p in await quarantine.parked(other, 10)] == ["9"]

    async def test_resume_moves_a_quarantined_row_once_and_settling_deletes_it(
        self, store: EventStore
    ) -> None:
        quarantine = _quarantine_of(store)
        entity = uuid.uuid4()
        await quarantine.count_attempts([(entity, "c"), (entity, "c")])
        await quarantine.quarantine([_entry(entity)])
        decided = await quarantine.decide(entity, "c", "resume")
        assert await quarantine.count_attempts([(entity, "c")]) == {(entity, "c"): 1}
        assert decided.status == "resuming"
        assert decided.decided_at is not None
        with pytest.raises(NotQuarantinedError):
            await quarantine.decide(entity, "c", "skip")
        await quarantine.settle(entity, "c")
        assert await quarantine.find(entity, "c") is None
        with pytest.raises(NotQuarantinedError):
            await quarantine.decide(entity, "c", "resume")

    async def test_a_resumed_command_that_fails_again_is_quarantined_again(
        self, store: EventStore
    ) -> None:
        quarantine = _quarantine_of(store)
        entity = uuid.uuid4()
        await quarantine.quarantine([_entry(entity)])
        await quarantine.decide(entity, "c", "resume")
        await quarantine.quarantine([_entry(entity)])
        found = await quarantine.find(entity, "c")
        assert found is not None
        assert (found.status, found.decided_at) == ("quarantined", None)

    async def test_a_second_quarantine_of_a_waiting_command_changes_nothing(
        self, store: EventStore
    ) -> None:
        quarantine = _quarantine_of(store)
        entity = uuid.uuid4()
        await quarantine.quarantine([_entry(entity)])
        await quarantine.decide(entity, "c", "skip")
        # An owner that had not seen the decision yet quarantines the command again.
        await quarantine.quarantine([_entry(entity)])
        found = await quarantine.find(entity, "c")
        assert found is not None
        assert found.status == "skipping"

    async def test_skip_leaves_the_row_skipped(self, store: EventStore) -> None:
        quarantine = _quarantine_of(store)
        entity = uuid.uuid4()
        await quarantine.quarantine([_entry(entity)])
        assert (await quarantine.decide(entity, "c", "skip")).status == "skipping"
        await quarantine.settle(entity, "c")
        found = await quarantine.find(entity, "c")
        assert found is not None
        assert found.status == "skipped"
        with pytest.raises(NotQuarantinedError):
            await quarantine.decide(entity, "c", "resume")

    async def test_an_unknown_decision_is_refused(self, store: EventStore) -> None:
        quarantine = _quarantine_of(store)
        entity = uuid.uuid4()
        await quarantine.quarantine([_entry(entity)])
        decision: Any = "retry"  # as an operator might type it
        with pytest.raises(ValueError, match="resumed or skipped"):
            await quarantine.decide(entity, "c", decision)

    # -- the fence at commit (see pachyderm.store.Fenced) ----------------------

    async def test_a_change_to_a_parked_entity_is_fenced_and_the_rest_commits(
        self, store: EventStore, open_store: Callable[[], Awaitable[EventStore]]
    ) -> None:
        parked, other = Ref.from_key("counter", "parked"), Ref.from_key("counter", "other")
        assert await store.commit([_bump(parked, 0, "1")]) == [Committed(1)]
        await _quarantine_of(store).quarantine([_entry(parked.id, "poison")])
        # A worker with an old view of the quarantine (another store: its connection).
        stale = await open_store()
        outcomes = await stale.commit(
            [_bump(parked, 1, "2"), _bump(other, 0, "9"), _bump(parked, 2, "3")]
        )
        assert outcomes == [Fenced(), Committed(1), Fenced()]
        assert (await store.load(parked)).version == 1
        assert await store.recorded([(parked.id, "2"), (parked.id, "3")]) == {}
        # Even a command that applied before waits (its record answers it once released).
        assert await stale.commit([_bump(parked, 0, "1")]) == [Fenced()]
        assert await store.recorded([(parked.id, "1")]) == {(parked.id, "1"): Duplicate(b"r-1", 1)}

    async def test_the_resumed_command_and_those_parked_behind_it_commit(
        self, store: EventStore
    ) -> None:
        ref = Ref.from_key("counter", "released")
        quarantine = _quarantine_of(store)
        await quarantine.quarantine([_entry(ref.id, "poison")])
        await quarantine.park([Parked(ref.id, "later", b"m")])
        assert await store.commit([_bump(ref, 0, "poison")]) == [Fenced()]
        await quarantine.decide(ref.id, "poison", "resume")
        assert await store.commit([_bump(ref, 0, "poison"), _bump(ref, 1, "later")]) == [
            Committed(1),
            Committed(2),
        ]
        assert await store.commit([_bump(ref, 2, "newer")]) == [Fenced()]
        await quarantine.unpark([p.position for p in await quarantine.parked(ref.id, 10)])
        await quarantine.settle(ref.id, "poison")
        assert await store.commit([_bump(ref, 2, "newer")]) == [Committed(3)]

    async def test_a_parked_command_is_fenced_while_another_waits_for_an_operator(
        self, store: EventStore
    ) -> None:
        # A former owner's old view releases it after the first skip, unaware of the second.
        ref = Ref.from_key("counter", "twice")
        quarantine = _quarantine_of(store)
        await quarantine.quarantine([_entry(ref.id, "first")])
        await quarantine.park([Parked(ref.id, "later", b"m")])
        await quarantine.decide(ref.id, "first", "skip")
        await quarantine.quarantine([_entry(ref.id, "second")])
        assert await store.commit([_bump(ref, 0, "later")]) == [Fenced()]
        await quarantine.decide(ref.id, "second", "skip")
        assert await store.commit([_bump(ref, 0, "later")]) == [Committed(1)]

    async def test_a_skipped_command_fences_its_entity_while_commands_wait_behind_it(
        self, store: EventStore
    ) -> None:
        ref = Ref.from_key("counter", "skipped")
        quarantine = _quarantine_of(store)
        await quarantine.quarantine([_entry(ref.id, "poison")])
        await quarantine.decide(ref.id, "poison", "skip")
        await quarantine.settle(ref.id, "poison")
        await quarantine.park([Parked(ref.id, "stranded", b"m")])
        assert await store.commit([_bump(ref, 0, "newer")]) == [Fenced()]
        assert await store.commit([_bump(ref, 0, "stranded")]) == [Committed(1)]
        await quarantine.unpark([p.position for p in await quarantine.parked(ref.id, 10)])
        assert await store.commit([_bump(ref, 1, "newer")]) == [Committed(2)]

    async def test_the_skip_policy_fences_nothing(self, store: EventStore) -> None:
        ref = Ref.from_key("counter", "skip-policy")
        skip = Quarantined(ref.id, "poison", "counter", 3, "skip", "quarantined", 3, "hung", b"m")
        await _quarantine_of(store).quarantine([skip])
        assert await store.commit([_bump(ref, 0, "next")]) == [Committed(1)]
