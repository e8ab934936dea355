"""Confirmed publishes asked for in one turn of the event loop go out in one write.

aiormq publishes one message at a time: each takes the channel's lock, queues its
frame, waits until the connection's writer has written it (a turn of the loop),
and only then lets the next publish on the channel queue its own. Under load (a
client with hundreds of calls in flight, an outbox publishing a batch's effects)
publishes queue behind one another on that lock, a socket write and two task
switches each. Here the publishes asked for on one channel while a write is
being put together join it: one write for all of them, queued at once when the
channel's write queue has room (the usual case: nothing waits but each publisher
for its confirm), else by a task that waits for room behind the channel's lock.

Invariants: each message keeps aiormq's own bookkeeping for publisher confirms
(its delivery tag, in the order the messages were asked for, and its message id
for a returned message), so the broker's ack, nack or return reaches its
publisher exactly as through ``basic_publish``; a write that fails before any
frame of it was queued takes its delivery tags back, as ``basic_publish`` does; and
a write that has to wait runs as a task of its channel
(:mod:`._channel_writes`), so a channel that closes meanwhile fails its
publishers instead of leaving them waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from random import getrandbits
from uuid import UUID

import aiormq
from aiormq.abc import ChannelFrame, ConfirmationFrameType, FrameType
from pamqp.commands import Basic

from ._channel_writes import can_write_now, publish_frames, queue_now, waiting_write


@dataclass(slots=True)
class _Publish:
    exchange: str
    routing_key: str
    body: bytes
    properties: Basic.Properties
    confirmed: asyncio.Future[ConfirmationFrameType] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


# The publishes waiting for their channel's next write, by channel.
_waiting: dict[aiormq.Channel, list[_Publish]] = {}


async def publish_confirmed(
    channel: aiormq.Channel,
    *,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: Basic.Properties,
) -> ConfirmationFrameType:
    """Publish mandatory on ``channel`` (publisher confirms on) and wait for the broker's
    confirm, raising what ``basic_publish`` raises for a nack, a return or a closed
    channel. A publish cancelled before its write is not sent; once written, cancelling
    the wait does not take it back."""
    if not channel.publisher_confirms:
        raise TypeError(f"not a channel with publisher confirms: {channel!r}")
    if not properties.message_id:
        # What aiormq matches a returned message with its publish by.
        properties.message_id = UUID(int=getrandbits(128), version=4).hex
    publish = _Publish(exchange, routing_key, body, properties)
    batch = _waiting.get(channel)
    if batch is None:
        batch = _waiting[channel] = []
        asyncio.get_running_loop().call_soon(_flush, channel)
    batch.append(publish)
    return await publish.confirmed


def _flush(channel: aiormq.Channel) -> None:
    """Write the publishes asked for by now (the next turn of the loop): at once when
    the channel's write queue has room and no earlier write waits for it (nothing can
    come between the look and the write: no await), else in a task that waits for room
    behind the channel's lock (:mod:`._channel_writes`)."""
    batch = [p for p in _waiting.pop(channel) if not p.confirmed.done()]
    if not batch:
        return  # every publisher gave up before its turn
    if not can_write_now(channel):
        task = waiting_write(channel, partial(_write, channel, batch))
        task.add_done_callback(partial(_failed, batch))
        return
    queue_now(channel, _registered(channel, batch))


def _failed(batch: Sequence[_Publish], write: asyncio.Task[None]) -> None:
    """Fail the publishes of a waiting write that failed (not with their own cancellation:
    the write's is the channel's closing or the loop's end)."""
    if write.cancelled():
        _fail(batch, aiormq.exceptions.ChannelInvalidStateError("the write was cancelled"))
    elif (error := write.exception()) is not None:
        _fail(batch, error if isinstance(error, Exception) else RuntimeError(repr(error)))


async def _write(channel: aiormq.Channel, batch: Sequence[_Publish]) -> None:
    async with channel.lock:
        first = channel.delivery_tag + 1
        frames = _registered(channel, batch)
        written = channel.create_future()
        try:
            await channel.write_queue.put(
                ChannelFrame.marshall(channel.number, frames, drain_future=written)
            )
        except BaseException:
            _take_back(channel, batch, first)
            raise
        await written


def _registered(channel: aiormq.Channel, batch: Sequence[_Publish]) -> list[FrameType]:
    """The frames of ``batch``, each publish registered for its confirm."""
    frames: list[FrameType] = []
    for publish in batch:
        method = Basic.Publish(
            exchange=publish.exchange, routing_key=publish.routing_key, mandatory=True
        )
        frames += publish_frames(channel, method, publish.properties, publish.body)
        _expect_confirm(channel, publish)
    return frames


def _fail(batch: Sequence[_Publish], error: Exception) -> None:
    for publish in batch:
        if not publish.confirmed.done():
            publish.confirmed.set_exception(error)


def _expect_confirm(channel: aiormq.Channel, publish: _Publish) -> None:
    """Register ``publish`` for its confirm (or its return) as ``basic_publish`` does."""
    channel.delivery_tag += 1
    tag = channel.delivery_tag
    message_id = publish.properties.message_id
    assert message_id is not None  # given one by publish_confirmed
    channel.confirmations[tag] = publish.confirmed
    channel.message_id_delivery_tag[message_id] = tag

    def forget(_: object) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            del channel.message_id_delivery_tag[message_id]

    publish.confirmed.add_done_callback(forget)


def _take_back(channel: aiormq.Channel, batch: Sequence[_Publish], first: int) -> None:
    """Undo :func:`_expect_confirm` for a batch the broker never saw."""
    channel.delivery_tag = first - 1
    for tag in range(first, first + len(batch)):
        channel.confirmations.pop(tag, None)
    # Each publisher then gets the failure (_failed), and forget() drops its id.
