"""Settling: which live members count in the assignment, as a pure function of the roll."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pachyderm.fleet._settling import counts_from, next_settling, settled
from pachyderm.fleet._store import Member, Roll


def roll(now: float, **started: float) -> Roll:
    return Roll(now, tuple(Member(worker, at) for worker, at in sorted(started.items())))


def test_without_a_join_delay_every_live_member_counts() -> None:
    assert settled(roll(10.0, a=10.0, b=9.99), 0.0) == ["a", "b"]


def test_members_started_in_one_window_count_together_at_the_end_of_the_next() -> None:
    live = roll(0.0, a=10.1, b=10.9, c=11.2, old=3.0)
    assert [counts_from(m.started, 1.0) for m in live.members] == [12.0, 12.0, 13.0, 5.0]
    assert settled(Roll(11.99, live.members), 1.0) == ["old"]
    assert settled(Roll(12.0, live.members), 1.0) == ["a", "b", "old"]
    assert settled(Roll(13.0, live.members), 1.0) == ["a", "b", "c", "old"]


@given(st.floats(0, 1e9), st.floats(0.01, 100))
def test_a_member_counts_one_to_two_join_delays_after_it_started(
    started: float, join_delay: float
) -> None:
    counted = counts_from(started, join_delay)
    assert started + join_delay * (1 - 1e-9) <= counted <= started + 2 * join_delay * (1 + 1e-9)


@given(st.floats(0, 1e6), st.floats(1e-6, 10), st.floats(0.01, 100))
def test_a_member_is_settled_from_when_it_counts(
    started: float, after: float, join_delay: float
) -> None:
    # (just past the instant: exactly at it, either side of a rounding)
    now = counts_from(started, join_delay) + after * join_delay
    assert settled(roll(now, a=started), join_delay) == ["a"]
    assert settled(roll(started + join_delay * 0.999, a=started), join_delay) == []


def test_a_cold_fleet_counts_together_those_that_joined_by_half_a_delay_before() -> None:
    # a and b started a moment apart, across a window's edge; c too close to the first
    # count for every member to have seen it: it waits for its own window.
    live = roll(0.0, a=10.8, b=11.1, c=11.6)
    assert [counts_from(m.started, 1.0) for m in live.members] == [12.0, 13.0, 13.0]
    assert settled(Roll(11.99, live.members), 1.0) == []
    assert next_settling(Roll(11.99, live.members), 1.0) == 12.0
    assert settled(Roll(12.0, live.members), 1.0) == ["a", "b"]
    assert next_settling(Roll(12.0, live.members), 1.0) == 13.0
    assert settled(Roll(13.0, live.members), 1.0) == ["a", "b", "c"]
    assert next_settling(Roll(13.0, live.members), 1.0) is None


def test_a_running_fleet_s_newcomers_count_by_their_own_window() -> None:
    live = roll(0.0, old=3.0, a=10.8, b=11.1)
    assert settled(Roll(12.0, live.members), 1.0) == ["a", "old"]
    assert next_settling(Roll(12.0, live.members), 1.0) == 13.0
    # Once the old member is gone, the newcomers are a cold fleet of their own.
    cold = roll(0.0, a=10.8, b=11.1)
    assert settled(Roll(12.0, cold.members), 1.0) == ["a", "b"]
