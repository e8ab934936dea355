"""Frames written at once when nothing waits, and in order behind a write that waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, cast

import aiormq
from aiormq.abc import ChannelFrame
from pamqp.commands import Basic
from pamqp.frame import unmarshal

from pachyderm.transport._channel_writes import can_write_now, write


class _Channel:
    """What the writes use of an aiormq channel, with a write queue of one place that
    this test drains by hand (as the connection's writer would)."""

    number = 1
    is_closed = False

    def __init__(self) -> None:
        self.write_queue: asyncio.Queue[ChannelFrame] = asyncio.Queue(maxsize=1)
        self._lock = asyncio.Lock()

    @property
    @asynccontextmanager
    async def lock(self) -> AsyncIterator[None]:
        async with self._lock:
            yield

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def create_task(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.ensure_future(coroutine)

    def drain_one(self) -> int:
        """Write the next frame: its delivery tag."""
        written = self.write_queue.get_nowait()
        written.drain()
        _, _, frame = unmarshal(written.payload)
        assert isinstance(frame, Basic.Ack)
        return int(frame.delivery_tag)


def ack(tag: int) -> list[Basic.Ack]:
    return [Basic.Ack(delivery_tag=tag)]


async def test_a_frame_is_queued_at_once_when_nothing_waits() -> None:
    channel = _Channel()
    real = cast(aiormq.Channel, channel)
    assert can_write_now(real)
    await write(real, ack(1))  # returns without a turn of the writer
    assert channel.drain_one() == 1


async def test_frames_after_one_waiting_for_room_wait_behind_it_in_order() -> None:
    channel = _Channel()
    real = cast(aiormq.Channel, channel)
    await write(real, ack(1))  # the queue is full now
    second = asyncio.ensure_future(write(real, ack(2)))
    await asyncio.sleep(0.01)
    assert not second.done()
    assert channel.drain_one() == 1  # room: yet the next write must still queue behind 2
    third = asyncio.ensure_future(write(real, ack(3)))
    await asyncio.sleep(0.01)
    assert not can_write_now(real)
    order = [channel.drain_one()]
    await asyncio.sleep(0.01)
    order.append(channel.drain_one())
    await asyncio.wait_for(asyncio.gather(second, third), 1)
    assert order == [2, 3]
    assert can_write_now(real)
