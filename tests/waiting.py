"""Waiting for something asynchronous to come true, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(
    condition: Callable[[], Awaitable[bool]], timeout: float = 2.0, interval: float = 0.01
) -> None:
    """Poll ``condition`` until it holds; AssertionError if it does not within ``timeout``."""
    for _ in range(max(1, int(timeout / interval))):
        if await condition():
            return
        await asyncio.sleep(interval)
    name = getattr(condition, "__name__", "condition")
    raise AssertionError(f"{name} did not come true within {timeout}s")
