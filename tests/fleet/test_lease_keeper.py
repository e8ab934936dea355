"""The lease keeper: a thread renews a worker's lease while its event loop is blocked,
for up to a tolerance (in process, with a renewal that counts; the membership on the
real PostgreSQL is tested in test_membership.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest

from pachyderm.fleet._lease_keeper import LeaseKeeper
from tests.blocked_loop import block

INTERVAL = 0.05


class Counting:
    """A renewal that records the threads it ran on and whether it was closed."""

    def __init__(self, holds: bool = True) -> None:
        self.holds = holds
        self.renewals: list[float] = []
        self.threads: set[int] = set()
        self.closed = False

    async def renew(self) -> bool:
        self.renewals.append(time.monotonic())
        self.threads.add(threading.get_ident())
        return self.holds

    async def close(self) -> None:
        self.closed = True


class Made:
    """The renewals a keeper made, one per pause."""

    def __init__(self, holds: bool = True) -> None:
        self.holds = holds
        self.made: list[Counting] = []

    def __call__(self) -> Counting:
        self.made.append(Counting(self.holds))
        return self.made[-1]


async def running(keeper: LeaseKeeper) -> AsyncIterator[LeaseKeeper]:
    task = asyncio.create_task(keeper.run())
    await asyncio.sleep(INTERVAL)  # the thread is up
    try:
        yield keeper
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def made() -> Made:
    return Made()


@pytest.fixture
async def keeper(made: Made) -> AsyncIterator[LeaseKeeper]:
    async for running_keeper in running(LeaseKeeper(made, interval=INTERVAL, tolerance=1.0)):
        yield running_keeper


async def test_a_running_loop_renews_nothing_from_the_thread(
    keeper: LeaseKeeper, made: Made
) -> None:
    await asyncio.sleep(20 * INTERVAL)
    assert made.made == []
    assert keeper.renewed_ago() is None


async def test_a_blocked_loop_has_its_lease_renewed_every_interval_from_the_thread(
    keeper: LeaseKeeper, made: Made
) -> None:
    block(0.5)  # blocks the loop, as a hanging handler does
    [pause] = made.made
    assert threading.get_ident() not in pause.threads
    # The first after 1.5 intervals, then one per interval: about 8 in 0.5 s.
    assert 4 <= len(pause.renewals) <= 10
    gaps = [b - a for a, b in zip(pause.renewals, pause.renewals[1:], strict=False)]
    assert min(gaps) >= INTERVAL * 0.9
    ago = keeper.renewed_ago()
    assert ago is not None
    assert ago < 3 * INTERVAL
    await asyncio.sleep(4 * INTERVAL)  # the loop runs: the pause ends, its connection closed
    assert pause.closed
    assert len(made.made) == 1


async def test_each_pause_gets_a_renewal_of_its_own(keeper: LeaseKeeper, made: Made) -> None:
    for _ in range(2):
        block(0.3)
        await asyncio.sleep(4 * INTERVAL)
    assert [len(pause.renewals) > 0 and pause.closed for pause in made.made] == [True, True]


async def test_past_the_tolerance_the_lease_is_let_go(made: Made) -> None:
    async for keeper in running(LeaseKeeper(made, interval=INTERVAL, tolerance=0.3)):
        block(0.8)
        [pause] = made.made
        assert pause.closed  # ended while the loop was still blocked
        assert max(pause.renewals) - min(pause.renewals) < 0.3
        ago = keeper.renewed_ago()
        assert ago is not None
        assert ago > 0.4


async def test_a_lease_that_no_longer_holds_is_not_counted_as_renewed() -> None:
    made = Made(holds=False)
    async for keeper in running(LeaseKeeper(made, interval=INTERVAL, tolerance=1.0)):
        block(0.3)
        assert made.made[0].renewals
        assert keeper.renewed_ago() is None


async def test_a_failing_renewal_is_logged_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Failing(Counting):
        async def renew(self) -> bool:
            await super().renew()
            raise OSError("connection refused")

    made: list[Failing] = []

    def make() -> Failing:
        made.append(Failing())
        return made[-1]

    async for keeper in running(LeaseKeeper(make, interval=INTERVAL, tolerance=1.0)):
        block(0.3)
        assert len(made[0].renewals) >= 2  # tried again at the next look
        assert keeper.renewed_ago() is None
    assert "renewing the lease from a thread failed: connection refused" in caplog.text


def test_timings_must_be_positive(made: Made) -> None:
    with pytest.raises(ValueError, match="positive"):
        LeaseKeeper(made, interval=0, tolerance=1.0)
    with pytest.raises(ValueError, match="positive"):
        LeaseKeeper(made, interval=1.0, tolerance=0)
