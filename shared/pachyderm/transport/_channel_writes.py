"""Writing frames on an AMQP channel: at once when nothing waits, else as a task that
the channel's closing ends.

aiormq writes a frame by taking the channel's lock, queueing the frame on the
connection's short write queue and waiting until the connection's writer wrote
it: two turns of the event loop for every reply, ack or publish. Frames reach
the socket in the order they were queued (one queue per connection), so a frame
queued at once when the queue has room, and no earlier frame of the channel is
still waiting for room, keeps its place: :func:`write` then queues it without
waiting at all. Otherwise it waits as aiormq does, behind the channel's lock, and
later frames of the channel wait behind it.

A write that waits for room in the write queue waits for good if the connection
dies meanwhile: nobody drains that queue any more, and the wait holds the channel's
lock, so every later write waits behind it (seen: a worker's replies stuck for
180 s after a broker restart, until its stop limit ended it). Run as a task of its
channel (:func:`on_channel`), such a write fails with the channel instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import aiormq
from aiormq.abc import ChannelFrame, FrameType
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

# The writes waiting for room in their channel's write queue, by channel.
_waiting: dict[aiormq.Channel, set[asyncio.Task[None]]] = {}


def can_write_now(channel: aiormq.Channel) -> bool:
    """Whether a frame queued now on ``channel`` goes behind every frame asked for before."""
    return not channel.is_closed and channel not in _waiting and not channel.write_queue.full()


def waiting_write(
    channel: aiormq.Channel, work: Callable[[], Awaitable[None]]
) -> asyncio.Task[None]:
    """``work`` (which queues frames, under the channel's lock) as a task of ``channel``;
    until it ends, later writes on the channel wait too."""
    task = asyncio.ensure_future(on_channel(channel, work))
    _waiting.setdefault(channel, set()).add(task)
    task.add_done_callback(partial(_ended, channel))
    return task


def _ended(channel: aiormq.Channel, task: asyncio.Task[None]) -> None:
    tasks = _waiting[channel]
    tasks.discard(task)
    if not tasks:
        del _waiting[channel]


async def write(channel: aiormq.Channel, frames: Sequence[FrameType]) -> None:
    """Queue ``frames`` on ``channel`` in one write, in order with the channel's other
    writes: at once if it can be (returns without waiting for the socket), else once
    there is room (returns when written)."""
    if can_write_now(channel):
        queue_now(channel, frames)
        return
    await waiting_write(channel, partial(_queued, channel, frames))


def queue_now(channel: aiormq.Channel, frames: Sequence[FrameType]) -> None:
    """Queue ``frames`` in one write; only when :func:`can_write_now` said so, with no
    await since."""
    channel.write_queue.put_nowait(ChannelFrame.marshall(channel.number, list(frames)))


def publish_frames(
    channel: aiormq.Channel,
    publish: Basic.Publish,
    properties: Basic.Properties,
    body: bytes,
) -> list[FrameType]:
    """What aiormq's ``basic_publish`` sends for one message: the method, the content
    header and the body in pieces of the connection's frame size."""
    size = channel.max_content_size
    return [
        publish,
        ContentHeader(properties=properties, body_size=len(body)),
        *(ContentBody(body[start : start + size]) for start in range(0, len(body), size)),
    ]


async def _queued(channel: aiormq.Channel, frames: Sequence[FrameType]) -> None:
    written = channel.create_future()
    async with channel.lock:
        await channel.write_queue.put(
            ChannelFrame.marshall(channel.number, list(frames), drain_future=written)
        )
    await written


async def on_channel(
    channel: aiormq.abc.AbstractChannel, work: Callable[[], Awaitable[None]]
) -> None:
    """Run ``work`` as a task of ``channel``, which its closing ends: the caller then gets
    :class:`aiormq.exceptions.ChannelInvalidStateError` (its own cancellation stays one)."""
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")

    async def run() -> None:
        await work()

    try:
        await channel.create_task(run())
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the caller's own cancellation
        # The channel's closing cancels its tasks: a failure to the caller.
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed") from None
