"""AMQP plumbing shared by the RabbitMQ transport's parts: error translation, message
conversion, and consumers that take deliveries from aiormq directly.

The hot path (replies, commands, deliveries) goes through aiormq and pamqp
rather than aio-pika's message objects, which cost several times as much per
message; aio-pika still owns the robust connection, its channels and the
declarations it repeats after a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any, NoReturn

import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustChannel, DeliveryMode
from aiormq.abc import DeliveredMessage, FrameType
from pamqp.commands import Basic

from .._cancellation import cancelled_itself
from .._errors import TransportError, TransportUnavailableError
from .._overload import OverloadedError
from ._channel_writes import publish_frames, write
from ._message import Message
from ._publish_batches import publish_confirmed

log = logging.getLogger("pachyderm.transport")

OnDelivery = Callable[[DeliveredMessage], Coroutine[Any, Any, None]]


# What aio-pika and aiormq raise when the broker refuses or cannot be reached.
FAILURES = (OSError, aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError)
# Seconds a confirmed publish waits for the broker's confirm. A quorum queue confirms
# once a majority wrote the message, seconds at most while a leader is elected; but
# RabbitMQ 3.10's sometimes never confirms a publish sent around a leader's move (a
# worker's batch waited on one for good in the cluster test, session 18). Its outcome
# is then unknown: the publisher tries again with the same id, which dedupes it.
CONFIRM_PATIENCE = 15.0


def translated(error: BaseException, action: str) -> TransportError | OverloadedError:
    """The Pachyderm transport error for one of :data:`FAILURES`; a publish the broker
    nacked is an :class:`OverloadedError` (a queue at its length limit refused it)."""
    if isinstance(error, aiormq.exceptions.PublishError):
        return TransportError(f"{action}: no queue is bound to take it ({error})")
    if isinstance(error, aiormq.exceptions.DeliveryError) and isinstance(error.frame, Basic.Nack):
        # RabbitMQ nacks a publish when a queue it routes to is full and set to
        # reject-publish (and only otherwise on an internal error of the queue).
        return OverloadedError(
            f"{action}: the partition queue is full (PACHYDERM_QUEUE_MAX_LENGTH) and"
            " refused it; nothing was published"
        )
    if isinstance(error, aiormq.exceptions.AMQPChannelError | aiormq.exceptions.DeliveryError):
        return TransportError(f"{action}: RabbitMQ refused ({error})")
    if (refused := _certificate_refused(error)) is not None:
        # Not "unavailable": trying again cannot help until the settings change.
        return TransportError(f"{action}: RabbitMQ's TLS certificate was not accepted ({refused})")
    return TransportUnavailableError(f"{action}: RabbitMQ is unavailable ({error})")


@asynccontextmanager
async def translated_errors(action: str) -> AsyncIterator[None]:
    """Present aio-pika and aiormq failures as Pachyderm's transport errors."""
    try:
        yield
    except FAILURES as error:
        raise translated(error, action) from error
    except asyncio.CancelledError as error:
        _raise_closed_under(error, action)
    except RuntimeError as error:
        # aiormq's answer to a channel asked of a connection that is closed, or not
        # open again yet after a broker restart: the broker is away, not a bug.
        if not _connection_gone(error):
            raise
        raise TransportUnavailableError(f"{action}: RabbitMQ is unavailable ({error})") from error


def _raise_closed_under(error: asyncio.CancelledError, action: str) -> NoReturn:
    """Raise ``error`` again if this task was asked to stop; else the outage it stands
    for: aiormq raised it because the channel or connection waited on was closed
    (:mod:`pachyderm._cancellation`)."""
    if cancelled_itself():
        raise error
    raise TransportUnavailableError(f"{action}: RabbitMQ closed the channel under it") from error


def _connection_gone(error: RuntimeError) -> bool:
    text = str(error)
    return text.endswith(" closed") or "was not opened" in text


def _certificate_refused(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The failed certificate check behind ``error``, if that is what it is."""
    visited: set[int] = set()  # a chain of causes can loop back on itself
    current: BaseException | None = error
    while current is not None and id(current) not in visited:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        visited.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def properties(message: Message, delivery_mode: DeliveryMode) -> Basic.Properties:
    """The AMQP properties of ``message``."""
    return Basic.Properties(
        content_type=message.content_type,
        headers=dict(message.headers),
        delivery_mode=delivery_mode,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        message_type=message.type,
    )


def delivered(incoming: DeliveredMessage) -> Message:
    """The message of a delivery."""
    fields = incoming.header.properties
    return Message(
        body=incoming.body,
        routing_key=incoming.routing_key or "",
        message_id=fields.message_id,
        correlation_id=fields.correlation_id,
        reply_to=fields.reply_to,
        content_type=fields.content_type,
        type=fields.message_type,
        headers=MappingProxyType(fields.headers or {}),
    )


async def underlay(channel: AbstractChannel) -> aiormq.abc.AbstractChannel:
    """The aiormq channel under an aio-pika one (the current one, after a reconnect)."""
    return await channel.get_underlay_channel()


async def publish(channel: AbstractChannel, exchange: str, message: Message, action: str) -> None:
    """Publish persistent and mandatory on ``channel`` (publisher confirms on), in one
    write with the others asked for meanwhile (:mod:`._publish_batches`); returns once
    the broker confirmed it. An unroutable message raises :class:`TransportError`."""
    # A plain try rather than translated_errors: this runs once per message.
    try:
        async with asyncio.timeout(CONFIRM_PATIENCE):
            await publish_confirmed(
                _aiormq(await underlay(channel)),
                exchange=exchange,
                routing_key=message.routing_key,
                body=message.body,
                properties=properties(message, DeliveryMode.PERSISTENT),
            )
    except TimeoutError:
        raise TransportUnavailableError(
            f"{action}: RabbitMQ did not confirm it within {CONFIRM_PATIENCE:g} s;"
            " whether it was published is unknown"
        ) from None
    except FAILURES as error:
        raise translated(error, action) from error
    except asyncio.CancelledError as error:
        _raise_closed_under(error, action)


async def publish_transient(
    channel: AbstractChannel, messages: Sequence[Message], action: str
) -> None:
    """Publish ``messages`` to the default exchange, not persistent, in one write.

    For a channel without confirms (replies): one frame for the socket instead
    of one per message, and one wait until it is written. aiormq publishes
    one message at a time, so this puts together what its ``basic_publish``
    would send for each.
    """
    try:
        current = await underlay(channel)
        if not isinstance(current, aiormq.Channel) or current.publisher_confirms:
            raise TypeError(f"not a channel without publisher confirms: {current!r}")
        frames: list[FrameType] = []
        for message in messages:
            method = Basic.Publish(exchange="", routing_key=message.routing_key)
            transient = properties(message, DeliveryMode.NOT_PERSISTENT)
            frames += publish_frames(current, method, transient, message.body)
        await write(current, frames)
    except FAILURES as error:
        raise translated(error, action) from error
    except asyncio.CancelledError as error:
        _raise_closed_under(error, action)


# Acks and rejects are queued at once, or wait for room as a task of their channel
# (._channel_writes): never on a dead connection's full write queue for good.


async def ack(message: DeliveredMessage, *, multiple: bool = False) -> None:
    assert message.delivery_tag is not None  # a delivery has one
    frame = Basic.Ack(delivery_tag=message.delivery_tag, multiple=multiple)
    await write(_aiormq(message.channel), [frame])


async def reject(message: DeliveredMessage, *, requeue: bool = False) -> None:
    """Reject: the queue dead-letters it, or with ``requeue`` delivers it again."""
    assert message.delivery_tag is not None  # a delivery has one
    frame = Basic.Reject(delivery_tag=message.delivery_tag, requeue=requeue)
    await write(_aiormq(message.channel), [frame])


def _aiormq(channel: aiormq.abc.AbstractChannel) -> aiormq.Channel:
    if not isinstance(channel, aiormq.Channel):
        raise TypeError(f"not an aiormq channel: {channel!r}")
    return channel


class Subscription:
    """Consumes one queue on an aio-pika channel, with deliveries straight from aiormq.

    aio-pika restores only the consumers it started itself, so a subscription
    consumes again whenever aio-pika opens its channel again (after a
    reconnect), and has the channel opened again when the broker cancels the
    consumer (its queue deleted, say) or when asked to (:meth:`renew`). The queue
    must be declared through the aio-pika channel, which declares it again before
    consuming resumes. A consume that completes after :meth:`stop` (a reconnect's,
    racing the stop) closes its channel again at once rather than leave a consumer
    nobody reads holding deliveries.
    """

    def __init__(
        self, channel: AbstractRobustChannel, queue: str, on_delivery: OnDelivery, *, no_ack: bool
    ) -> None:
        self._channel = channel
        self._queue = queue
        self._on_delivery = on_delivery
        self._no_ack = no_ack
        self._tag: str | None = None
        self._stopped = False
        self._pending: set[asyncio.Task[None]] = set()
        self._renewing = False

    async def start(self) -> None:
        await self._consume()
        self._channel.reopen_callbacks.add(self._consume_again)

    def stop(self) -> None:
        """Consume no more after a reconnect (closing the channel stops the consumer)."""
        self._stopped = True
        self._channel.reopen_callbacks.discard(self._consume_again)

    def renew(self, channel: aiormq.abc.AbstractChannel | None = None) -> None:
        """Close ``channel`` (by default the current one), at most one at a time, to
        consume again on a new one: closing returns to the queue whatever the broker
        counts as delivered on it, and aio-pika opens another unless the channel was
        closed for good (:meth:`stop`)."""
        if not self._renewing:
            self._renewing = True
            self._in_background(self._channel_closed(channel), "renewing the consumer of")

    async def _consume(self) -> None:
        channel = await underlay(self._channel)
        channel.on_consumer_cancel_callbacks.add(self._cancelled)
        consuming = await channel.basic_consume(self._queue, self._on_delivery, no_ack=self._no_ack)
        self._tag = consuming.consumer_tag
        if self._stopped:
            await channel.close()  # stopped meanwhile: nobody would read it

    def _consume_again(self, _channel: object) -> None:
        # In a task of its own, which waits for the connection to be ready: aio-pika
        # calls this while restoring the connection, which is ready only afterwards.
        if not self._stopped:
            self._in_background(self._consume(), "consuming again")

    def _cancelled(self, cancel: Basic.Cancel) -> None:
        if self._stopped or cancel.consumer_tag != self._tag:
            return
        log.warning(
            "the broker cancelled the consumer of %s; opening its channel again", self._queue
        )
        # Closing the channel makes the robust connection open it again, declare the
        # queue and call _consume_again. Not from here: the channel's reader runs this.
        self.renew()

    async def _channel_closed(self, channel: aiormq.abc.AbstractChannel | None) -> None:
        try:
            await (channel or await underlay(self._channel)).close()
        finally:
            self._renewing = False

    def _in_background(self, work: Awaitable[None], what: str) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(lambda done: self._finished(done, what))

    def _finished(self, task: asyncio.Task[None], what: str) -> None:
        self._pending.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # Its channel closes with the failure and, once open again, consumes again.
            log.warning("%s %s failed: %r", what, self._queue, error)
