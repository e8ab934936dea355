"""The fleet simulation: the real membership code on a virtual clock, deterministic by seed."""

from __future__ import annotations

import asyncio
import time

import pytest

from pachyderm.fleet import assign
from pachyderm.fleet._simulation import (
    AFTER,
    BEFORE,
    FleetSimulation,
    Phase,
    Timing,
    scenario,
    second_worker_joins,
)
from pachyderm.fleet._virtual_clock import SimulationStalledError, VirtualClockLoop

PARTITIONS = 1024


def test_the_virtual_clock_jumps_to_the_next_timer() -> None:
    loop = VirtualClockLoop(start=100.0)
    try:
        began = time.monotonic()

        async def an_hour_of_naps() -> list[float]:
            seen = []
            for _ in range(4):
                await asyncio.sleep(900)
                seen.append(loop.time())
            return seen

        assert loop.run_until_complete(an_hour_of_naps()) == [1000.0, 1900.0, 2800.0, 3700.0]
        assert time.monotonic() - began < 1.0
    finally:
        loop.close()


def test_a_run_that_can_never_end_is_reported_not_hung() -> None:
    loop = VirtualClockLoop()
    try:
        with pytest.raises(SimulationStalledError, match="no timer pending"):
            loop.run_until_complete(asyncio.Event().wait())
    finally:
        loop.close()


def test_a_seed_gives_the_same_figures_and_another_seed_others() -> None:
    def run(seed: int) -> list[Phase]:
        return FleetSimulation(PARTITIONS, AFTER, seed=seed).run(scenario(10))

    assert run(7) == run(7)
    assert run(7) != run(8)


@pytest.mark.parametrize("timing", [BEFORE, AFTER], ids=["before", "after"])
@pytest.mark.parametrize("workers", [3, 24])
def test_every_change_ends_with_one_holder_per_partition(timing: Timing, workers: int) -> None:
    sim = FleetSimulation(PARTITIONS, timing, seed=workers)
    run = scenario(workers)
    holders_after_each: list[list[int]] = []

    async def checked(sim: FleetSimulation) -> list[Phase]:
        phases = await run(sim)
        holders_after_each.append(sim.ledger.owners())
        return phases

    phases = sim.run(checked)
    assert [phase.name for phase in phases] == [
        "cold start",
        "steady",
        "join one",
        "leave one",
        "die one",
        "join a tenth",
        "die a tenth",
        "rolling restart",
    ]
    assert holders_after_each == [[1] * PARTITIONS]
    for phase in phases:
        # Settled for good: nothing moved in the quiet time after, none held twice then.
        assert phase.late_moves == 0, phase
        assert phase.moves >= phase.needed, phase
        # A dead worker's partitions wait for its lease (dead_after) and a heartbeat
        # more; otherwise a partition waits at most about a heartbeat for its owner.
        limit = timing.dead_after + timing.heartbeat_interval + 0.1
        if phase.name != "cold start":
            assert phase.max_unowned_s <= limit, phase
        assert phase.max_doubled_s <= timing.heartbeat_interval + 0.1, phase
    steady = phases[1]
    assert steady.moves == steady.settle_s == steady.max_unowned_s == 0
    # The members' queries per heartbeat: renew and roll (one query or two), and pruning.
    per_heartbeat = (1 if timing.one_query_heartbeat else 2) + 1 / timing.prune_every
    expected = workers / timing.heartbeat_interval * per_heartbeat
    # A heartbeat's period is the interval plus its queries' round trips.
    assert 0.9 * expected <= steady.queries_per_s <= expected


def test_settling_starts_a_fleet_with_one_move_per_partition_and_no_doubles() -> None:
    before = FleetSimulation(PARTITIONS, BEFORE, seed=3).run(scenario(24))[0]
    after = FleetSimulation(PARTITIONS, AFTER, seed=3).run(scenario(24))[0]
    assert before.name == after.name == "cold start"
    assert before.moves > 2 * PARTITIONS  # the fleet hands partitions round as workers arrive
    assert before.doubled_partition_s > 0
    assert (after.moves, after.needed, after.max_doubled_s) == (PARTITIONS, PARTITIONS, 0)
    # The price: nothing is served until the first window after the starts ends.
    assert AFTER.dead_after <= after.settle_s <= 2 * AFTER.dead_after + 1.0 + 0.6


def test_settled_members_switch_together_when_a_newcomer_counts() -> None:
    # Everyone knows when a newcomer counts (the end of the window after its start)
    # and looks again at that instant: a partition changing hands to it has two
    # holders, or none, for about a query's round trip, not up to a heartbeat.
    phases = {p.name: p for p in FleetSimulation(PARTITIONS, AFTER, seed=4).run(scenario(24))}
    for name in ("join one", "join a tenth"):
        joined = phases[name]
        assert joined.moves == joined.needed > 0
        assert joined.max_doubled_s <= 2 * AFTER.latency + 1e-9, joined
        assert joined.max_unowned_s <= 2 * AFTER.latency + 1e-9, joined
    before = {p.name: p for p in FleetSimulation(PARTITIONS, BEFORE, seed=4).run(scenario(24))}
    assert before["join one"].max_doubled_s > 10 * AFTER.latency


def test_the_second_worker_no_longer_takes_half_of_everything_from_the_first() -> None:
    [before] = FleetSimulation(PARTITIONS, BEFORE, seed=1).run(second_worker_joins())
    [after] = FleetSimulation(PARTITIONS, AFTER, seed=1).run(second_worker_joins())
    assert before.moves == PARTITIONS + PARTITIONS // 2
    assert after.moves == PARTITIONS
    assert after.workers_after == 2


def test_the_simulated_workers_hold_what_assign_gives_them() -> None:
    async def script(sim: FleetSimulation) -> list[Phase]:
        names = [sim.name() for _ in range(5)]
        phase = await sim.phase("start", lambda: sim.start_spread(names, 0.5))
        expected = assign(PARTITIONS, names)
        assert {w: sorted(sim.ledger.holdings[w]) for w in names} == expected
        return [phase]

    FleetSimulation(PARTITIONS, AFTER, seed=5).run(script)
