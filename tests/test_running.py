"""pachyderm.run: a service's coroutine on uvloop, with start-up objects frozen out of the GC."""

from __future__ import annotations

import asyncio
import gc

import uvloop

import pachyderm


async def loop_kind() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_run_returns_the_result_of_a_coroutine_run_on_uvloop() -> None:
    assert pachyderm.run(loop_kind()) is uvloop.Loop
    # Nothing global changed: asyncio.run still uses asyncio's own loop.
    assert asyncio.run(loop_kind()) is not uvloop.Loop


def test_run_freezes_what_exists_at_start() -> None:
    gc.unfreeze()
    try:
        pachyderm.run(asyncio.sleep(0))
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
