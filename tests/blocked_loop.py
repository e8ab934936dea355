"""Blocking the running event loop from the test itself, as a handler that hangs does."""

from __future__ import annotations

import time


def block(seconds: float) -> None:
    """Block the thread, event loop and all, as a handler's own code does (a plain
    function: a sleep written in a coroutine reads as the mistake it usually is)."""
    time.sleep(seconds)
