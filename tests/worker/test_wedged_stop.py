"""A partition that does not stop in time ends its worker (status 75, its lease given up)
rather than hold every later assignment behind it; the log shows where it waited."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

import pytest

from examples import counter
from pachyderm import App
from pachyderm._wire import command_message
from pachyderm.fleet import SoloMembership
from pachyderm.store import EventStore
from pachyderm.transport import InProcessTransport, Message, Topology
from pachyderm.worker import Worker, WorkerOptions
from tests.worker.partition_tasks import in_a_partition

APP = App([counter.Counter])
LIMIT = 0.3


class Silent(InProcessTransport):
    """Replies wait for good, as a publish on a connection that never comes back may."""

    def __init__(self) -> None:
        super().__init__(Topology(partitions=1))
        self.replying = asyncio.Event()

    async def publish_replies(self, messages: Sequence[Message]) -> None:
        if in_a_partition():
            self.replying.set()
        await asyncio.Event().wait()


async def test_a_stop_waiting_past_the_limit_ends_the_worker(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    transport = Silent()
    await transport.start()
    worker = Worker(APP, store, transport, SoloMembership("w"), WorkerOptions(stop_limit=LIMIT))
    ended: list[float] = []
    worker.on_stall = ended.append
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), 5)
        message = command_message(APP, counter.Counter.ref("c"), counter.Increment(amount=1))
        await transport.publish_command(replace(message, reply_to="caller"))
        await asyncio.wait_for(transport.replying.wait(), 5)  # the batch hangs, committed
        stop.set()
        await asyncio.wait_for(running, 5 + LIMIT)  # returns: on_stall did not end the test
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        for partition in worker.partitions.values():  # the wedged one was popped already
            await partition.stop()
        await transport.close()
    assert ended == [LIMIT]
    [wedged] = [record for record in caplog.records if record.levelno == logging.CRITICAL]
    assert getattr(wedged, "event", None) == "worker.wedged"
    assert f"did not stop within {LIMIT} s" in wedged.getMessage()
    assert "publish_replies" in wedged.getMessage()  # where it waited, in its stacks
