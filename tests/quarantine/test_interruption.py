"""Interrupting a decision that overran the handler budget: the exception lands in the
decision and nowhere else, a thread outside one is left alone, the interpreter is as
before once it landed (also under a C trace function, as coverage runs tests), and the
watchdog interrupts before it exits (and exits when the interruption cannot land)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pachyderm.worker._interruption import (
    HandlerOverran,
    _deciding,
    _raised,
    interrupt,
    interruptible,
)
from pachyderm.worker._watchdog import EXIT_STALLED, Watchdog
from tests.python_process import run_python


def spin(stop: threading.Event) -> int:
    """A handler's loop in Python code (checks ``stop`` so a failing test ends)."""
    turns = 0
    while not stop.is_set():
        turns += 1
    return turns


def interrupted(decide: Callable[[], None], inside: threading.Event, stop: threading.Event) -> int:
    """Run ``decide`` in a thread, interrupt it once ``inside`` is set, and wait for it
    (``stop`` ends its spin if the interruption never lands); the thread's ident."""
    thread = threading.Thread(target=decide)
    thread.start()
    assert inside.wait(5)
    assert thread.ident is not None
    assert interrupt(thread.ident)
    thread.join(5)
    stop.set()
    return thread.ident


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

    ident = interrupted(decide, inside, stop)
    assert outcome == ["interrupted"]
    assert not interrupt(ident)  # gone, and out of the decision for good


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


def test_a_handler_that_swallows_the_interruption_finishes_and_leaves_nothing_behind() -> None:
    stop, inside, outcome = threading.Event(), threading.Event(), []

    def decide() -> None:
        with interruptible():
            inside.set()
            try:
                spin(stop)
            except BaseException:  # a careless handler, the case under test
                outcome.append("swallowed")
        outcome.append("finished")
        time.sleep(0.05)  # nothing lands after the block
        with interruptible():  # and the next decision can be interrupted again
            assert threading.get_ident() in _deciding
        outcome.append("again")

    interrupted(decide, inside, stop)
    assert outcome == ["swallowed", "finished", "again"]
    assert not _raised
    assert not _deciding


INTERRUPTED_UNDER_COVERAGE = """
import faulthandler, threading
from pachyderm.worker._interruption import (
    HandlerOverran,
    _deciding,
    _raised,
    interrupt,
    interruptible,
)
faulthandler.dump_traceback_later(20, exit=True)  # a hang fails in 20 s, with its stacks
stop, inside, outcome = threading.Event(), threading.Event(), []
def decide():
    try:
        with interruptible():
            inside.set()
            while not stop.is_set():
                pass
    except HandlerOverran:
        outcome.append("interrupted")
thread = threading.Thread(target=decide)
thread.start()
inside.wait(5)
assert interrupt(thread.ident)
thread.join(5)
stop.set()
print(outcome)
"""


def test_an_interruption_under_coverage_ends(tmp_path: Path) -> None:
    """Withdrawing the exception with ``PyThreadState_SetAsyncExc(id, NULL)`` once left
    the eval breaker set, and under coverage's C tracer a thread then spun for good."""
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED_UNDER_COVERAGE)
    data = f"--data-file={tmp_path / 'coverage'}"
    finished = run_python("-m", "coverage", "run", data, "--source=pachyderm", str(script))
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "['interrupted']"


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


STUCK_IN_C = """
import asyncio, logging, time
from pachyderm.worker._interruption import interruptible
from pachyderm.worker._watchdog import EXIT_STALLED, Watchdog

async def main():
    asyncio.create_task(Watchdog(0.2).run())
    await asyncio.sleep(0.05)
    with interruptible():
        time.sleep(30)  # blocked in C: the exception would land when it returns

logging.basicConfig()
asyncio.run(main())
"""


def test_the_watchdog_still_exits_when_the_interruption_cannot_land() -> None:
    """In a process of its own: while an exception waits to land in one thread, CPython
    3.11 has every other thread spin under a C trace function (coverage's), the
    watchdog's with them, so this cannot run in a test process that coverage traces."""
    started = time.monotonic()
    finished = run_python("-c", STUCK_IN_C)
    assert finished.returncode == EXIT_STALLED
    assert "interrupted" in finished.stderr
    assert "past the handler budget" in finished.stderr
    assert time.monotonic() - started < 20  # the watchdog's exit, not the sleep's end
