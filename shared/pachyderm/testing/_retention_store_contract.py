"""The retention part of the event store contract (mixed into :class:`EventStoreContract`).

Invariant: ``prune`` deletes only rows stored longer ago than the window it is
given, oldest first, never more than its limit per call, and never an effect
still waiting to be published; a pruned command id is forgotten (the same id
then commits again), which is why commands older than the window are refused
before they reach the store.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from .. import Ref
from ..store import (
    Change,
    Committed,
    Duplicate,
    EventStore,
    HasQuarantine,
    NewEffect,
    NewEvent,
    Quarantined,
    QuarantineStore,
)

# Rows are made "old" by waiting: the contract may use the public port only.
_WINDOW = 0.5
_AGE = 1.0


def _ref(key: str) -> Ref:
    return Ref.from_key("counter", key)


def _change(ref: Ref, command_id: str, expected: int = 0, effects: int = 0) -> Change:
    made = tuple(NewEffect(uuid.uuid4(), "effect.notify", b"x") for _ in range(effects))
    return Change(ref, expected, command_id, (NewEvent("Added", b"{}"),), b"r", made)


async def _still_recorded(store: EventStore, refs: list[Ref]) -> list[bool]:
    found = await store.recorded([(ref.id, "c") for ref in refs])
    return [(ref.id, "c") in found for ref in refs]


async def _skipped(quarantine: QuarantineStore, entity_id: uuid.UUID, *, settle: bool) -> None:
    entry = Quarantined(entity_id, "c", "counter", 0, "park", "quarantined", 3, "hung", b"m")
    await quarantine.quarantine([entry])
    await quarantine.decide(entity_id, "c", "skip")
    if settle:
        await quarantine.settle(entity_id, "c")


class RetentionStoreContract:
    """Pruning tests every :class:`~pachyderm.store.EventStore` backend must pass."""

    async def test_old_command_ids_are_pruned_oldest_first_a_bounded_batch_at_a_time(
        self, store: EventStore
    ) -> None:
        old = [_ref(f"old{n}") for n in range(3)]
        for ref in old:
            assert await store.commit([_change(ref, "c")]) == [Committed(1)]
            await asyncio.sleep(0.02)  # distinct times, so "oldest first" is observable
        await asyncio.sleep(_AGE)
        fresh = _ref("fresh")
        await store.commit([_change(fresh, "c")])
        assert await store.count_prunable("commands", _WINDOW) == 3
        assert await store.prune("commands", _WINDOW, 2) == 2
        assert await _still_recorded(store, [*old, fresh]) == [False, False, True, True]
        assert await store.prune("commands", _WINDOW, 2) == 1
        assert await store.prune("commands", _WINDOW, 2) == 0
        assert await _still_recorded(store, [*old, fresh]) == [False, False, False, True]
        assert await store.count_prunable("commands", _WINDOW) == 0

    async def test_pruning_keeps_the_histories_and_forgets_only_the_command_ids(
        self, store: EventStore
    ) -> None:
        ref = _ref("forgotten")
        await store.commit([_change(ref, "c")])
        await asyncio.sleep(_AGE)
        # Old, but not pruned yet: still answered with the stored reply.
        assert await store.commit([_change(ref, "c", expected=1)]) == [Duplicate(b"r", 1)]
        assert await store.prune("commands", _WINDOW, 10) == 1
        assert (await store.load(ref)).version == 1
        # Forgotten: the same command id now applies again. Hence the refusal of
        # commands sent longer ago than the window, before they reach the store.
        assert await store.commit([_change(ref, "c", expected=1)]) == [Committed(2)]

    async def test_only_published_effects_are_pruned(self, store: EventStore) -> None:
        await store.commit([_change(_ref("e1"), "c", effects=2), _change(_ref("e2"), "c", 0, 1)])
        pending = await store.pending_effects()
        published = [e.effect_id for e in pending if e.entity_id == _ref("e1").id]
        await store.mark_published(published)
        await asyncio.sleep(_AGE)
        assert await store.count_prunable("effects", _WINDOW) == 2
        assert await store.prune("effects", _WINDOW, 1) == 1
        assert await store.prune("effects", _WINDOW, 10) == 1
        assert await store.prune("effects", _WINDOW, 10) == 0
        left = await store.pending_effects()
        assert [e.entity_id for e in left] == [_ref("e2").id]

    async def test_recent_rows_stay(self, store: EventStore) -> None:
        await store.commit([_change(_ref("new"), "c", effects=1)])
        await store.mark_published([e.effect_id for e in await store.pending_effects()])
        assert await store.prune("commands", 60.0, 10) == 0
        assert await store.prune("effects", 60.0, 10) == 0
        assert await _still_recorded(store, [_ref("new")]) == [True]

    async def test_old_attempt_counts_and_skipped_commands_are_pruned(
        self, store: EventStore
    ) -> None:
        assert isinstance(store, HasQuarantine), "the store keeps no quarantine"
        quarantine = store.quarantine_store()
        old = [(uuid.uuid4(), "old") for _ in range(3)]
        await quarantine.count_attempts(old)
        skipped, skipping, waiting = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await _skipped(quarantine, skipped, settle=True)
        await _skipped(quarantine, skipping, settle=False)  # decided, not carried out yet
        await quarantine.quarantine(
            [Quarantined(waiting, "c", "counter", 0, "park", "quarantined", 3, "hung", b"m")]
        )
        await asyncio.sleep(_AGE)
        fresh = (uuid.uuid4(), "fresh")
        await quarantine.count_attempts([fresh, old[0]])  # old[0] was attempted again now
        recent = uuid.uuid4()
        await _skipped(quarantine, recent, settle=True)
        assert await store.count_prunable("attempts", _WINDOW) == 2
        assert await store.prune("attempts", _WINDOW, 1) == 1
        assert await store.prune("attempts", _WINDOW, 10) == 1
        assert await store.prune("attempts", _WINDOW, 10) == 0
        assert await quarantine.attempts([*old, fresh]) == {old[0]: 2, fresh: 1}
        # Only skipped rows go: one waiting for an operator or for its owner stays.
        assert await store.count_prunable("quarantine", _WINDOW) == 1
        assert await store.prune("quarantine", _WINDOW, 10) == 1
        assert await store.prune("quarantine", _WINDOW, 10) == 0
        assert await quarantine.find(skipped, "c") is None
        for kept in (skipping, waiting, recent):
            assert await quarantine.find(kept, "c") is not None

    async def test_a_batch_is_bounded_and_names_what_it_prunes(self, store: EventStore) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            await store.prune("commands", 1.0, 0)
        with pytest.raises(ValueError, match="commands, effects, attempts, quarantine"):
            await store.prune("events", 1.0, 10)  # type: ignore[arg-type]
