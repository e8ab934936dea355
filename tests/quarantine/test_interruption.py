"""Interrupting a decision that overran the handler budget: the exception lands in the
decision and nowhere else, a thread outside one is left alone, and the watchdog
interrupts before it exits (and exits when the interruption cannot land)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pachyderm.worker._interruption import HandlerOverran, interrupt, interruptible
from pachyderm.worker._watchdog import Watchdog

from .test_watchdog import Stalls, block


def spin(stop: threading.Event) -> int:
    """A handler's loop in Python code (checks ``stop`` so a failing test ends)."""
    turns = 0
    while not stop.is_set():
        turns += 1
    return turns


def test_a_loop_inside_a_decision_is_interrupted_from_another_thread() -> None:
    stop, inside, outcome = threading.Event(), threading.Event(), []

    def decide() -> None:
        try:
            with interruptible():
                inside.set()
                spin(stop)
            outcome.append("finished")
        except HandlerOverran:
            outcome.append("interrupted")

    thread = threading.Thread(target=decide)
    thread.start()
    assert inside.wait(5)
    assert thread.ident is not None
    assert interrupt(thread.ident)
    thread.join(5)
    stop.set()
    assert outcome == ["interrupted"]
    assert not interrupt(thread.ident)  # gone, and out of the decision for good


def test_a_thread_outside_a_decision_is_left_alone() -> None:
    stop, outcome = threading.Event(), []
    started = threading.Event()

    def loop() -> None:
        with interruptible():
            pass  # a decision that ended
        started.set()
        try:
            outcome.append(spin(stop))
        except HandlerOverran:
            outcome.append(-1)

    thread = threading.Thread(target=loop)
    thread.start()
    assert started.wait(5)
    assert thread.ident is not None
    assert not interrupt(thread.ident)
    time.sleep(0.05)
    stop.set()
    thread.join(5)
    assert len(outcome) == 1
    assert outcome[0] > 0


async def test_the_watchdog_interrupts_a_stuck_decision_and_the_loop_goes_on() -> None:
    stalls: list[float] = []
    watching = asyncio.create_task(Watchdog(0.2, on_stall=stalls.append).run())
    await asyncio.sleep(0.05)
    stop = threading.Event()
    threading.Timer(5, stop.set).start()  # ends the spin if the interruption never lands
    started = time.monotonic()
    with pytest.raises(HandlerOverran), interruptible():
        spin(stop)  # a handler that loops forever, the event loop with it
    assert not stop.is_set()
    assert 0.1 < time.monotonic() - started < 2.0  # the budget, from the last beat
    await asyncio.sleep(0.5)  # the loop runs again: the watchdog is content
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    stop.set()
    assert stalls == []


async def test_the_watchdog_still_exits_when_the_interruption_cannot_land() -> None:
    stalls = Stalls()
    noticed = stalls.noticed
    watching = asyncio.create_task(Watchdog(0.2, on_stall=stalls).run())
    await asyncio.sleep(0.05)
    # Delivered once the C call returns, still inside the decision.
    with pytest.raises(HandlerOverran), interruptible():
        block(0.8)  # blocked in C: the exception waits for it to return
    assert noticed.is_set()  # the watchdog gave up waiting and ended it (here: recorded)
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    assert len(stalls) == 1
    assert stalls[0] > 0.2 + 0.05
