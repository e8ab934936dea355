"""Confirmed publishes made in one turn of the event loop go out in one write.

aiormq publishes one message at a time: each takes the channel's lock, queues its
frame, waits until the connection's writer has written it (a turn of the loop),
and only then lets the next publish on the channel queue its own. Under load (a
client with hundreds of calls in flight, an outbox publishing a batch's effects)
publishes queue behind one another on that lock, a socket write and two task
switches each. Here the publishes asked for on one channel while a write is
being put together join it: one lock, one write, one wait, for all of them.

Invariants: each message keeps aiormq's own bookkeeping for publisher confirms
(its delivery tag, in the order the messages were asked for, and its message id
for a returned message), so the broker's ack, nack or return reaches its
publisher exactly as through ``basic_publish``; a write that fails before any
frame of it was queued takes its delivery tags back, as ``basic_publish`` does; and
the write runs as a task of its channel (:func:`._channel_tasks.on_channel`), so a channel
that closes meanwhile fails its publishers instead of leaving them waiting.
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
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from ._channel_tasks import on_channel


@dataclass(slots=True)
class _Publish:
    exchange: str
    routing_key: str
    body: bytes
    properties: Basic.Properties
    confirmed: asyncio.Future[ConfirmationFrameType] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Batch:
    """The publishes waiting for their channel's next write, and the task that writes."""

    publishes: list[_Publish] = field(default_factory=list)
    writing: asyncio.Task[None] | None = None


_waiting: dict[aiormq.Channel, _Batch] = {}


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
        batch = _waiting[channel] = _Batch()
        batch.writing = asyncio.ensure_future(_write_soon(channel))
    batch.publishes.append(publish)
    return await publish.confirmed


async def _write_soon(channel: aiormq.Channel) -> None:
    """Write the publishes asked for by the time this task runs (the next turn)."""
    batch = [p for p in _waiting.pop(channel).publishes if not p.confirmed.done()]
    if not batch:
        return  # every publisher gave up before its turn
    try:
        await on_channel(channel, partial(_write, channel, batch))
    except Exception as error:
        _fail(batch, error)
    except BaseException:
        # Not the publishers' own cancellation: theirs must not look like one.
        _fail(batch, aiormq.exceptions.ChannelInvalidStateError("the write was cancelled"))
        raise


def _fail(batch: Sequence[_Publish], error: Exception) -> None:
    for publish in batch:
        if not publish.confirmed.done():
            publish.confirmed.set_exception(error)


async def _write(channel: aiormq.Channel, batch: Sequence[_Publish]) -> None:
    frames: list[FrameType] = []
    async with channel.lock:
        first = channel.delivery_tag + 1
        for publish in batch:
            frames += _frames(channel, publish)
            _expect_confirm(channel, publish)
        written = channel.create_future()
        try:
            await channel.write_queue.put(
                ChannelFrame.marshall(channel.number, frames, drain_future=written)
            )
        except BaseException:
            _take_back(channel, batch, first)
            raise
        await written


def _frames(channel: aiormq.Channel, publish: _Publish) -> list[FrameType]:
    size = channel.max_content_size
    body = publish.body
    return [
        Basic.Publish(exchange=publish.exchange, routing_key=publish.routing_key, mandatory=True),
        ContentHeader(properties=publish.properties, body_size=len(body)),
        *(ContentBody(body[start : start + size]) for start in range(0, len(body), size)),
    ]


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
    # Each publisher then gets the failure (_write_soon), and forget() drops its id.
