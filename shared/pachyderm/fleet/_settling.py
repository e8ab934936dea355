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

Leaving and dying are never delayed: a member that is not live does not count,
so its partitions go to the others at once. Nor is a settled member's standing
touched by a join: until the newcomers count, the others keep their partitions.

Invariant: a pure function of the roll (starts and the store's time, which
every member reads from the same store), so members agree on it as they agree
on :func:`~pachyderm.fleet.assign`, within a heartbeat of one another.
"""

from __future__ import annotations

import math

from ._store import Roll


def settled(roll: Roll, join_delay: float) -> list[str]:
    """The members of ``roll`` counted in the assignment at ``roll.now``, sorted.

    With ``join_delay`` 0, every live member.
    """
    if join_delay <= 0:
        return roll.workers
    cutoff = _cutoff(roll, join_delay)
    return [member.worker_id for member in roll.members if member.started < cutoff]


def _cutoff(roll: Roll, join_delay: float) -> float:
    """Members that started before this count at ``roll.now``: those that started before
    the window before the current one (counts_from(started) <= now, at the cost of one
    comparison); once the first member counts, also those that joined by half a join
    delay before it did."""
    cutoff = (math.floor(roll.now / join_delay) - 1) * join_delay
    earliest = min((member.started for member in roll.members), default=math.inf)
    if earliest < cutoff:
        cutoff = max(cutoff, counts_from(earliest, join_delay) - join_delay / 2)
    return cutoff


def next_settling(roll: Roll, join_delay: float) -> float | None:
    """When the next member of ``roll`` not settled at ``roll.now`` counts (the store's
    clock); None if every member counts."""
    if join_delay <= 0:
        return None
    cutoff = _cutoff(roll, join_delay)
    pending = [member.started for member in roll.members if member.started >= cutoff]
    return counts_from(min(pending), join_delay) if pending else None


def counts_from(started: float, join_delay: float) -> float:
    """When a member started at ``started`` counts by its own window: the end of the
    window after its own (a cold fleet's may count sooner: see the module's note)."""
    return (math.floor(started / join_delay) + 2) * join_delay
