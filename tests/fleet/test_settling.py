"""Settling: which live members count in the assignment, as a pure function of the roll."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pachyderm.fleet._settling import Counted, counts_from, next_settling, settled
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


def test_a_fleet_told_its_size_counts_as_soon_as_that_many_joined() -> None:
    # Cold: a alone waits; once b is in too, both count at once, windows or not.
    assert settled(roll(10.3, a=10.1), 1.0, expected=2) == []
    assert next_settling(roll(10.3, a=10.1), 1.0, expected=2) == 12.0
    both = roll(10.5, a=10.1, b=10.4)
    assert settled(both, 1.0, expected=2) == ["a", "b"]
    assert next_settling(both, 1.0, expected=2) is None
    assert settled(both, 1.0) == []  # untold, the join delay


def test_members_beyond_the_fleet_s_size_count_by_their_windows() -> None:
    live = roll(10.5, a=10.1, b=10.3, c=10.4)
    assert settled(live, 1.0, expected=2) == ["a", "b"]
    assert next_settling(live, 1.0, expected=2) == 12.0
    assert settled(Roll(12.0, live.members), 1.0, expected=2) == ["a", "b", "c"]


def test_a_worker_replaced_in_a_fleet_told_its_size_counts_at_once() -> None:
    replaced = roll(100.2, old=3.0, new=100.1)  # a rolling restart's new run
    assert settled(replaced, 1.0, expected=2) == ["new", "old"]
    assert settled(replaced, 1.0) == ["old"]


@given(
    st.lists(st.floats(0, 100), min_size=1, max_size=6),
    st.integers(1, 7),
    st.floats(0, 50),
    st.floats(0, 50),
    st.floats(0.01, 10),
)
def test_a_member_once_counted_stays_counted(
    starts: list[float], expected: int, later: float, more: float, join_delay: float
) -> None:
    members = {f"w{i}": at for i, at in enumerate(starts)}
    now = max(starts) + later
    before = settled(roll(now, **members), join_delay, expected)
    after = settled(roll(now + more, **members), join_delay, expected)
    assert set(before) <= set(after)
    assert set(settled(roll(now, **members), join_delay)) <= set(before)


def test_a_member_counted_because_all_joined_stays_counted_when_one_leaves() -> None:
    """A rolling restart of two: b's successor counted at once with a; a leaves in turn
    (before either's window passed): b2 keeps counting, rather than hand every
    partition back until a's successor joins."""
    counted = Counted(1.0, expected=2)
    assert counted(roll(100.2, a=3.0, b2=100.1)) == ["a", "b2"]
    assert counted(roll(100.4, b2=100.1)) == ["b2"]
    assert settled(roll(100.4, b2=100.1), 1.0, expected=2) == []  # the rule alone
    assert counted(roll(100.6, b2=100.1, a2=100.5)) == ["a2", "b2"]
    # A new run of a worker is a newcomer, whatever its id counted before.
    assert Counted(1.0)(roll(10.0, a=3.0)) == ["a"]
    again = Counted(1.0)
    again(roll(10.0, a=3.0))
    assert again(roll(10.2, a=10.1, b=3.0)) == ["b"]
