"""SIGUSR2 dumps where a server process waits: thread stacks at once (faulthandler), the
asyncio tasks' chains of coroutines once the loop runs."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os

import pytest

from pachyderm._stack_dumps import SIGNAL, dump_on_signal, task_stacks


async def waits_for_good(event: asyncio.Event) -> None:
    await event.wait()


async def deep(event: asyncio.Event) -> None:
    await waits_for_good(event)


async def test_task_stacks_follow_each_task_down_to_what_it_awaits() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(deep(event), name="stuck")
    await asyncio.sleep(0)
    try:
        stacks = task_stacks()
    finally:
        event.set()
        await task
    [stuck] = [part for part in stacks.split("task ") if part.startswith("stuck:")]
    lines = stuck.splitlines()
    assert [line.rsplit(" in ", 1)[-1] for line in lines[1:4]] == ["deep", "waits_for_good", "wait"]
    assert lines[4].startswith("  awaiting ")
    assert "test_task_stacks_follow" not in stacks  # the caller's own task is left out


async def test_sigusr2_logs_the_tasks_stacks(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.WARNING, logger="pachyderm")
    event = asyncio.Event()
    task = asyncio.create_task(deep(event), name="stuck")
    dump_on_signal()
    try:
        os.kill(os.getpid(), SIGNAL)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if "process.stacks" in [getattr(r, "event", None) for r in caplog.records]:
                break
    finally:
        asyncio.get_running_loop().remove_signal_handler(SIGNAL)
        faulthandler.unregister(SIGNAL)
        event.set()
        await task
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "process.stacks"]
    assert "task stuck:" in record.getMessage()
    assert "in waits_for_good" in record.getMessage()
    assert "Current thread" in capfd.readouterr().err  # faulthandler's dump of the threads
