"""Where a process is stuck: the stacks of its threads and of its asyncio tasks.

An operator sends ``SIGUSR2`` to a server process (``kill -USR2 PID``): every
thread's stack goes to standard error at once, by :mod:`faulthandler`, which works
even while the event loop is blocked; then, once the loop runs, every task's stack
goes to the log (a ``process.stacks`` record), which shows a coroutine waiting for
good (a thread's stack only shows the loop waiting). The worker logs the task
stacks itself when a partition does not stop in time.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import logging
import signal
import sys
from types import FrameType

log = logging.getLogger("pachyderm")

SIGNAL = signal.SIGUSR2


def task_stacks() -> str:
    """Where every task of the running loop but the caller waits, as text: each one's
    chain of coroutines, outermost first, down to what the innermost awaits (asyncio's
    own ``print_stack`` shows only the outermost frame of a suspended task)."""
    current = asyncio.current_task()
    tasks = sorted(asyncio.all_tasks() - {current}, key=lambda task: task.get_name())
    return "".join(_awaiting(task) for task in tasks)


def _awaiting(task: asyncio.Task[object]) -> str:
    lines = [f"task {task.get_name()}:"]
    awaited: object = task.get_coro()
    while (frame := _frame(awaited)) is not None:
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    if awaited is not None:
        lines.append(f"  awaiting {awaited!r:.200}")
    return "\n".join(lines) + "\n"


def _frame(awaited: object) -> FrameType | None:
    frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
    return frame if isinstance(frame, FrameType) else None


def dump_on_signal() -> None:
    """Dump thread stacks at once and task stacks soon after, on :data:`SIGNAL`."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(SIGNAL, _log_task_stacks)
    # The C-level dump runs first, then the loop's own handler (chained).
    try:
        faulthandler.register(SIGNAL, file=sys.stderr, all_threads=True, chain=True)
    except (AttributeError, ValueError, io.UnsupportedOperation) as error:
        # Standard error is no file here (captured): the task stacks still go to the log.
        log.debug("no thread stacks on %s: %s", SIGNAL.name, error)


def _log_task_stacks() -> None:
    log.warning(
        "the stacks of %d tasks, as asked (SIGUSR2):\n%s",
        len(asyncio.all_tasks()),
        task_stacks(),
        extra={"event": "process.stacks"},
    )
