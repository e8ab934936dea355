"""The timer part of the event store contract (mixed into :class:`EventStoreContract`).

Invariant: what a backend must do with ``Change.timers`` and ``Change.fires``:
timer writes commit with their change or not at all, the last write of a key
wins, and a fire commits only while its very timer is pending and due (never
together with a cancel or a replacement that won the race).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from .. import Ref
from ..store import (
    Change,
    Committed,
    Conflict,
    EventStore,
    NewEvent,
    TimerFire,
    TimerGone,
    TimerWrite,
)

Factory = Callable[[], Awaitable[EventStore]]


def _ref(key: str = "t") -> Ref:
    return Ref.from_key("counter", key)


def _put(key: str, due: datetime, schedule: str = "s1") -> TimerWrite:
    return TimerWrite(key, due, schedule, f"{key}@{schedule}".encode())


def _fire(ref: Ref, due: datetime, command_id: str = "f1") -> Change:
    """Fire timer ``k`` of schedule s1: one event, and the timer consumed."""
    return Change(
        ref, 0, command_id, _EVENT, fires=TimerFire("k", "s1", due), timers=[TimerWrite("k")]
    )


def _past(seconds: float = 1.0) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


_EVENT = (NewEvent("fired", b"x"),)


class TimerStoreContract:
    """Timer tests every :class:`~pachyderm.store.EventStore` backend must pass."""

    async def test_a_timer_commits_with_its_change(self, store: EventStore) -> None:
        ref, due = _ref(), _past()
        change = Change(ref, 0, "c1", timers=[_put("k", due)], partition=3)
        assert await store.commit([change]) == [Committed(0)]
        [timer] = await store.entity_timers(ref.id)
        assert (timer.key, timer.partition, timer.due_at, timer.fire_at) == ("k", 3, due, due)
        assert (timer.schedule_id, timer.payload, timer.attempts) == ("s1", b"k@s1", 0)
        assert (timer.entity_id, timer.entity_type) == (ref.id, "counter")
        assert await store.due_timers(3, datetime.now(UTC), 10) == [timer]
        assert await store.due_timers(2, datetime.now(UTC), 10) == []
        assert await store.count_timers() == 1

    async def test_a_refused_change_schedules_nothing(self, store: EventStore) -> None:
        ref = _ref()
        await store.commit([Change(ref, 0, "c1", _EVENT)])
        stale = Change(ref, 0, "c2", timers=[_put("k", _past())])
        assert await store.commit([stale]) == [Conflict(1)]
        assert await store.entity_timers(ref.id) == []

    async def test_the_last_write_of_a_key_wins(self, store: EventStore) -> None:
        ref, due = _ref(), _past()
        batch = [
            Change(ref, 0, "c1", timers=[_put("a", due), TimerWrite("a"), _put("b", due)]),
            Change(ref, 0, "c2", timers=[TimerWrite("b"), _put("b", due, "s2")]),
            Change(ref, 0, "c3", timers=[_put("c", due), TimerWrite("c")]),
        ]
        assert await store.commit(batch) == [Committed(0)] * 3
        [timer] = await store.entity_timers(ref.id)
        assert (timer.key, timer.schedule_id) == ("b", "s2")

    async def test_scheduling_a_key_again_replaces_it(self, store: EventStore) -> None:
        ref, later = _ref(), datetime.now(UTC) + timedelta(hours=1)
        await store.commit([Change(ref, 0, "c1", timers=[_put("k", _past())])])
        await store.postpone_timers({(ref.id, "k"): 5.0})
        await store.commit([Change(ref, 0, "c2", timers=[_put("k", later, "s2")])])
        [timer] = await store.entity_timers(ref.id)
        assert (timer.due_at, timer.fire_at, timer.schedule_id, timer.attempts) == (
            later,
            later,
            "s2",
            0,
        )

    async def test_due_timers_come_soonest_first_within_the_limit(self, store: EventStore) -> None:
        now = datetime.now(UTC)
        dues = [now - timedelta(seconds=s) for s in (1, 3, 2)] + [now + timedelta(hours=1)]
        changes = [
            Change(_ref(str(n)), 0, "c", timers=[_put("k", due)], partition=0)
            for n, due in enumerate(dues)
        ]
        await store.commit(changes)
        found = await store.due_timers(0, now, 2)
        assert [timer.due_at for timer in found] == sorted(dues[:3])[:2]
        later = await store.due_timers(0, now + timedelta(hours=2), 10)
        assert len(later) == 4
        # Parked entities' timers left out: the limit counts the others only.
        skipped = {changes[1].ref.id, changes[2].ref.id}
        found = await store.due_timers(0, now + timedelta(hours=2), 2, skip=skipped)
        assert [timer.due_at for timer in found] == [dues[0], dues[3]]

    async def test_a_fire_consumes_its_timer_with_its_events(self, store: EventStore) -> None:
        ref, due = _ref(), _past()
        await store.commit([Change(ref, 0, "c1", timers=[_put("k", due)])])
        fire = Change(
            ref, 0, "f1", _EVENT, fires=TimerFire("k", "s1", due), timers=[TimerWrite("k")]
        )
        assert await store.commit([fire]) == [Committed(1)]
        assert await store.entity_timers(ref.id) == []
        assert [event.name for event in await store.history(ref.id)] == ["fired"]

    async def test_a_fire_of_a_replaced_timer_writes_nothing(self, store: EventStore) -> None:
        ref, due = _ref(), _past()
        await store.commit([Change(ref, 0, "c1", timers=[_put("k", due)])])
        await store.commit([Change(ref, 0, "c2", timers=[_put("k", due, "s2")])])
        fire = Change(
            ref, 0, "f1", _EVENT, fires=TimerFire("k", "s1", due), timers=[TimerWrite("k")]
        )
        after = Change(ref, 1, "c3", _EVENT)
        outcomes = await store.commit([fire, after])
        assert outcomes == [TimerGone(0), Conflict(0)]
        assert await store.history(ref.id) == []
        [timer] = await store.entity_timers(ref.id)
        assert timer.schedule_id == "s2"

    async def test_a_fire_of_a_cancelled_timer_writes_nothing(self, store: EventStore) -> None:
        ref, due = _ref(), _past()
        await store.commit([Change(ref, 0, "c1", timers=[_put("k", due)])])
        await store.commit([Change(ref, 0, "c2", timers=[TimerWrite("k")])])
        assert await store.commit([_fire(ref, due)]) == [TimerGone(0)]
        assert await store.recorded([(ref.id, "f1")]) == {}

    async def test_a_fire_never_commits_before_its_due_time(self, store: EventStore) -> None:
        ref, due = _ref(), datetime.now(UTC) + timedelta(hours=1)
        await store.commit([Change(ref, 0, "c1", timers=[_put("k", due)])])
        assert await store.commit([_fire(ref, due)]) == [TimerGone(0)]
        assert len(await store.entity_timers(ref.id)) == 1

    async def test_a_periodic_fire_puts_its_next_tick(self, store: EventStore) -> None:
        ref, due = _ref(), _past()
        following = due + timedelta(minutes=1)
        await store.commit([Change(ref, 0, "c1", timers=[_put("k", due)])])
        fire = Change(ref, 0, "f1", fires=TimerFire("k", "s1", due), timers=[_put("k", following)])
        assert await store.commit([fire]) == [Committed(0)]
        [timer] = await store.entity_timers(ref.id)
        assert (timer.due_at, timer.schedule_id) == (following, "s1")

    async def test_postponing_moves_the_next_try_not_the_due_time(self, store: EventStore) -> None:
        ref, due = _ref(), _past()
        await store.commit([Change(ref, 0, "c1", timers=[_put("k", due)], partition=1)])
        assert await store.postpone_timers({(ref.id, "k"): 3600.0, (ref.id, "x"): 1.0}) == {
            (ref.id, "k"): 1
        }
        [timer] = await store.entity_timers(ref.id)
        assert (timer.due_at, timer.attempts) == (due, 1)
        assert timer.fire_at > datetime.now(UTC) + timedelta(minutes=59)
        assert await store.due_timers(1, datetime.now(UTC), 10) == []
        assert await store.postpone_timers({}) == {}

    async def test_releasing_a_held_timer_starts_its_attempts_over(self, store: EventStore) -> None:
        ref, due = _ref(), _past()
        await store.commit([Change(ref, 0, "c1", timers=[_put("k", due)], partition=1)])
        await store.postpone_timers({(ref.id, "k"): 1.0})
        await store.hold_timers([(ref.id, "k")])
        [held] = await store.entity_timers(ref.id)
        assert (held.attempts, held.due_at) == (1, due)
        assert held.fire_at > datetime.now(UTC) + timedelta(days=365 * 99)
        assert await store.due_timers(1, datetime.now(UTC) + timedelta(days=365), 10) == []
        await store.hold_timers([])
        assert await store.release_timer(ref.id, "k")
        [timer] = await store.entity_timers(ref.id)
        assert (timer.attempts, timer.fire_at, timer.due_at) == (0, due, due)
        assert [t.key for t in await store.due_timers(1, datetime.now(UTC), 10)] == ["k"]
        assert not await store.release_timer(ref.id, "other")
        assert not await store.release_timer(_ref("nobody").id, "k")

    async def test_a_fire_and_a_cancel_never_both_commit(self, open_store: Factory) -> None:
        first, second = await open_store(), await open_store()
        for round_ in range(10):
            ref, due = _ref(f"race{round_}"), _past()
            await first.commit([Change(ref, 0, "c1", timers=[_put("k", due)])])
            fire = Change(
                ref, 0, "f", _EVENT, fires=TimerFire("k", "s1", due), timers=[TimerWrite("k")]
            )
            cancel = Change(ref, 0, "x", timers=[TimerWrite("k")])
            fired, cancelled = await asyncio.gather(first.commit([fire]), second.commit([cancel]))
            outcomes = (type(fired[0]), type(cancelled[0]))
            assert outcomes in {(Committed, Conflict), (TimerGone, Committed)}, outcomes
            assert await first.entity_timers(ref.id) == []
