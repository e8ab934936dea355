"""Which tick fires, by the missed-fire policy; deterministic fire ids (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from pachyderm import Cancel, HandlerError, Ref, Schedule
from pachyderm._scheduling import TimerSpec, fired_command_id, plan_fire, timer_write
from pachyderm.store import StoredTimer, TimerWrite

T0 = datetime(2030, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def stored(spec: TimerSpec, due: datetime = T0) -> StoredTimer:
    return StoredTimer(uuid.uuid4(), "seat", "k", 0, due, "s1", spec.encode(), due)


def periodic(missed: str, limit: int = 100, skipped: int = 0) -> TimerSpec:
    return TimerSpec("Tick", {}, None, MINUTE, missed, limit, skipped)


def test_a_one_shot_timer_fires_once_and_is_consumed() -> None:
    timer = stored(TimerSpec("Lapse", {"customer": "ann"}))
    plan = plan_fire(timer, TimerSpec.decode(timer.payload), T0 + timedelta(hours=5))
    assert plan.fired is not None
    assert (plan.fired.due, plan.fired.missed, plan.next_due) == (T0, 0, None)
    assert plan.writes(timer) == (TimerWrite("k"),)


def test_an_on_time_tick_misses_nothing_whatever_the_policy() -> None:
    for policy in ("once", "skip", "all"):
        plan = plan_fire(stored(periodic(policy)), periodic(policy), T0 + MINUTE / 2)
        assert plan.fired is not None
        assert (plan.fired.due, plan.fired.missed, plan.next_due) == (T0, 0, T0 + MINUTE)


def test_once_fires_one_catch_up_tick_then_keeps_the_grid() -> None:
    now = T0 + 10 * MINUTE + timedelta(seconds=5)  # ticks T0 .. T0+10min are due
    plan = plan_fire(stored(periodic("once")), periodic("once"), now)
    assert plan.fired is not None
    assert (plan.fired.due, plan.fired.missed) == (T0, 10)
    assert plan.next_due == T0 + 11 * MINUTE


def test_skip_drops_the_backlog_and_reports_it_on_the_next_tick() -> None:
    now = T0 + 10 * MINUTE + timedelta(seconds=5)
    timer = stored(periodic("skip"))
    plan = plan_fire(timer, periodic("skip"), now)
    assert plan.fired is None
    assert plan.next_due == T0 + 11 * MINUTE
    [write] = plan.writes(timer)
    assert write.payload is not None
    carried = TimerSpec.decode(write.payload)
    assert carried.skipped == 11
    following = plan_fire(stored(carried, T0 + 11 * MINUTE), carried, T0 + 11 * MINUTE)
    assert following.fired is not None
    assert following.fired.missed == 11
    assert TimerSpec.decode(following.writes(timer)[0].payload or b"").skipped == 0


def test_all_fires_every_tick_in_turn_within_the_limit() -> None:
    now = T0 + 4 * MINUTE + timedelta(seconds=5)  # five ticks due
    plan = plan_fire(stored(periodic("all")), periodic("all"), now)
    assert plan.fired is not None
    assert (plan.fired.due, plan.fired.missed, plan.next_due) == (T0, 0, T0 + MINUTE)
    bounded = plan_fire(stored(periodic("all", limit=2)), periodic("all", limit=2), now)
    assert bounded.fired is not None
    assert (bounded.fired.due, bounded.fired.missed) == (T0 + 3 * MINUTE, 3)
    assert bounded.next_due == T0 + 4 * MINUTE


def test_a_fire_id_is_deterministic_per_tick_and_scheduling() -> None:
    timer = stored(TimerSpec("Lapse", {}))
    assert fired_command_id(timer, T0) == fired_command_id(timer, T0)
    assert fired_command_id(timer, T0) != fired_command_id(timer, T0 + MINUTE)
    other = StoredTimer(timer.entity_id, "seat", "k", 0, T0, "s2", timer.payload, T0)
    assert fired_command_id(timer, T0) != fired_command_id(other, T0)


def test_schedule_writes_absolute_due_times() -> None:
    spec = TimerSpec("Lapse", {})
    after = timer_write(Schedule(object(), after=MINUTE, key="k"), spec, now=T0, scheduled_as="x")
    assert (after.key, after.due_at, after.schedule_id) == ("k", T0 + MINUTE, "x")
    every = timer_write(Schedule(object(), every=MINUTE, key="k"), spec, now=T0, scheduled_as="x")
    assert every.due_at == T0 + MINUTE
    assert timer_write(Cancel("k"), None, now=T0, scheduled_as="x") == TimerWrite("k")


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"at": T0, "after": MINUTE},
        {"at": datetime(2030, 1, 1)},  # naive: which zone?
        {"after": -MINUTE},
        {"every": timedelta(0)},
        {"after": MINUTE, "key": 5},
        {"after": MINUTE, "key": "x" * 201},
        {"after": MINUTE, "missed": "sometimes"},
        {"after": MINUTE, "limit": 0},
        {"after": MINUTE, "to": "seat-1"},
    ],
)
def test_a_bad_schedule_is_a_handler_error(arguments: dict[str, object]) -> None:
    with pytest.raises(HandlerError):
        Schedule(object(), **arguments)  # type: ignore[arg-type]


def test_the_key_defaults_to_the_command_class_name() -> None:
    class Lapse:
        pass

    assert Schedule(Lapse(), after=MINUTE).key == "Lapse"
    assert Schedule(Lapse(), after=MINUTE, to=Ref.from_key("seat", "1")).to is not None
