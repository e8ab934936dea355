"""The handler budget's watchdog: a thread notices a blocked event loop (which cannot
notice itself) and ends the process with its own exit status."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pachyderm.worker._watchdog import EXIT_STALLED, Watchdog
from tests.blocked_loop import block
from tests.python_process import run_python


class Stalls(list[float]):
    """An ``on_stall`` that records the stalls and tells another thread of the first."""

    def __init__(self) -> None:
        super().__init__()
        self.noticed = threading.Event()

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        self.noticed.set()


async def test_a_loop_blocked_past_the_budget_is_noticed_from_another_thread() -> None:
    stalls = Stalls()
    noticed = stalls.noticed
    watching = asyncio.create_task(Watchdog(0.2, on_stall=stalls).run())
    await asyncio.sleep(0.05)
    block(0.6)  # a handler that hangs: nothing on the loop runs meanwhile
    assert noticed.is_set()  # noticed while the loop was still blocked
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    assert len(stalls) == 1
    assert stalls[0] > 0.2


async def test_a_busy_but_responsive_loop_is_left_alone() -> None:
    stalls: list[float] = []
    watching = asyncio.create_task(Watchdog(0.3, on_stall=stalls.append).run())
    for _ in range(20):
        block(0.02)  # short blocking steps, as handlers take
        await asyncio.sleep(0)
    await asyncio.sleep(0.4)
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    assert stalls == []


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Watchdog(0)


HANGING = """
import asyncio, logging, time
from pachyderm.worker._watchdog import Watchdog

async def main():
    asyncio.create_task(Watchdog(0.2).run())
    await asyncio.sleep(0.05)
    while True:
        time.sleep(1)  # hangs the loop for good

logging.basicConfig()
asyncio.run(main())
"""


def test_the_process_exits_with_its_own_status_and_says_why() -> None:
    finished = run_python("-c", HANGING)
    assert finished.returncode == EXIT_STALLED
    assert "past the handler budget" in finished.stderr
