"""Which live members count in the assignment: the settled ones.

A member that just joined counts only from the end of the join-delay window
after the one it started in: windows are ``join_delay`` long and aligned on
the store's clock, so a member counts ``join_delay`` to twice that after it
started, and every member started in one window counts at the same instant.
A fleet started together (or scaled up by many at once) therefore rebalances
once per window, not once per start: without it the first worker claims every
partition and hands them over again as each of the others arrives.

A fleet that starts cold (no member counts yet) counts together every member
that joined by half a join delay before the first one counts, whatever window
each started in: workers started a moment apart across a window's edge then
take their partitions at once, rather than the first claiming all of them and
handing half over a window later. By default (the join delay is ``dead_after``,
three heartbeat intervals) half a join delay is longer than a heartbeat interval,
so every member has seen the ones it counts with before they count.

A fleet told its size (``expected``: the deployment's replicas, the same for every
member) does not wait for a window once that many have joined: the ``expected``
earliest members count from when the last of them joined. A fleet started cold
takes its partitions as soon as all its workers are in, rather than a join delay or
two later; a worker replaced in a running fleet (a rolling restart) takes its share
at once. Members beyond that number count by their windows, as without it.

Leaving and dying are never delayed: a member that is not live does not count,
so its partitions go to the others at once. Nor is a settled member's standing
touched by a join: until the newcomers count, the others keep their partitions.

Invariant: :func:`settled` is a pure function of the roll (starts and the store's
time, which every member reads from the same store), so members agree on it as they
agree on :func:`~pachyderm.fleet.assign`, within a heartbeat of one another; and a
member once counted stays counted while it lives (:class:`Counted` keeps it so when
members leave; see there why members still agree).
"""

from __future__ import annotations

import math

from ._store import Member, Roll


def settled(roll: Roll, join_delay: float, expected: int | None = None) -> list[str]:
    """The members of ``roll`` counted in the assignment at ``roll.now``, sorted.

    With ``join_delay`` 0, every live member. ``expected``: the fleet's size, if told.
    """
    if join_delay <= 0:
        return roll.workers
    cutoff = _cutoff(roll, join_delay, expected)
    return [member.worker_id for member in roll.members if member.started < cutoff]


def _cutoff(roll: Roll, join_delay: float, expected: int | None) -> float:
    """Members that started before this count at ``roll.now``: those that started before
    the window before the current one (counts_from(started) <= now, at the cost of one
    comparison); once the first member counts, also those that joined by half a join
    delay before it did; once ``expected`` members joined, those ``expected``."""
    cutoff = (math.floor(roll.now / join_delay) - 1) * join_delay
    earliest = min((member.started for member in roll.members), default=math.inf)
    if earliest < cutoff:
        cutoff = max(cutoff, counts_from(earliest, join_delay) - join_delay / 2)
    if expected is not None and len(roll.members) >= expected:
        last = sorted(member.started for member in roll.members)[expected - 1]
        cutoff = max(cutoff, math.nextafter(last, math.inf))
    return cutoff


def next_settling(roll: Roll, join_delay: float, expected: int | None = None) -> float | None:
    """When the next member of ``roll`` not settled at ``roll.now`` counts (the store's
    clock); None if every member counts."""
    if join_delay <= 0:
        return None
    cutoff = _cutoff(roll, join_delay, expected)
    pending = [member.started for member in roll.members if member.started >= cutoff]
    return counts_from(min(pending), join_delay) if pending else None


def counts_from(started: float, join_delay: float) -> float:
    """When a member started at ``started`` counts by its own window: the end of the
    window after its own (a cold fleet's may count sooner: see the module's note)."""
    return (math.floor(started / join_delay) + 2) * join_delay


class Counted:
    """The members one member counts, roll after roll: :func:`settled`, and those it
    counted before, while they stay live in the same run.

    Told the fleet's size, members count once that many joined, before their
    windows pass; one of them leaving would otherwise make the others stop counting
    until the next joins or their windows pass, handing every partition back (a
    rolling restart: the replaced worker's successor, then the next worker leaving).
    Members agree still: those that counted a member all saw the same roll, and a
    newcomer that did not, counts itself by the same rule, or not at all yet.
    """

    def __init__(self, join_delay: float, expected: int | None = None) -> None:
        self.join_delay = join_delay
        self.expected = expected
        self._members: frozenset[Member] = frozenset()

    def __call__(self, roll: Roll) -> list[str]:
        counted = set(settled(roll, self.join_delay, self.expected))
        counted.update(member.worker_id for member in roll.members if member in self._members)
        self._members = frozenset(m for m in roll.members if m.worker_id in counted)
        return sorted(counted)
