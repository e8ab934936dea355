"""A task's own cancellation, told from a ``CancelledError`` raised at it from below.

aiormq fails what waits on a channel or connection it closes with
``asyncio.CancelledError`` (its default reason for a close): a publish, an ack or a
channel's close can raise one in a task nobody cancelled. Passed on as it is, it
ends that task as if it had been asked to stop, silently, and a loop meant to
outlive failures stops for good (seen in the cluster test: a worker's membership
reports ended so, and the worker kept heartbeating on partitions it never handed
over). Code on such a boundary re-raises a ``CancelledError`` only when its own task
was asked to stop (``Task.cancelling()``, Python 3.11) and treats any other as the
failure it stands for.
"""

from __future__ import annotations

import asyncio


def cancelled_itself() -> bool:
    """Whether the current task has been asked to stop (True outside a task)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def is_failure(error: BaseException) -> bool:
    """Whether ``error``, caught by code that outlives failures, is one to handle as a
    failure: any ``Exception``, or a ``CancelledError`` its task was not asked for."""
    if isinstance(error, asyncio.CancelledError):
        return not cancelled_itself()
    return isinstance(error, Exception)
