"""A partition queue's deliveries on RabbitMQ, for one worker."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from itertools import islice

import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage

from .._errors import TransportError
from ._amqp import Subscription, ack, delivered, reject, translated_errors
from ._message import Delivery, pop_still_unsettled, pop_unsettled
from ._rabbitmq_topology import declare_partition_queue
from ._topology import Topology

log = logging.getLogger("pachyderm.transport")


class RabbitMQInbox:
    """One partition queue, consumed on a channel of its own whose QoS is the prefetch.

    Deliveries are buffered as the broker pushes them. The ``tag`` of a
    :class:`Delivery` is the transport's own sequence number, not the AMQP
    delivery tag: AMQP tags restart on the channel a reconnect opens, and a
    delivery taken before must never settle another message under the same tag.

    Settlements (ack, dead-letter, requeue) run one at a time, each written before
    the next is chosen: one that settles its deliveries one by one takes them out
    of the unsettled ones first, so another's ``multiple`` ack chosen meanwhile
    (its batch now the oldest) would cover those not yet written; their own acks
    would then be refused and close the channel, and a requeue or dead-letter so
    covered would be an ack (seen in chaos runs: a suspect run's batch settled
    beside its partition's).
    """

    def __init__(
        self,
        partition: int,
        channel: AbstractRobustChannel,
        tags: Iterator[int],
        forget: Callable[[RabbitMQInbox], None],
    ) -> None:
        self.partition = partition
        self._channel = channel
        self._tags = tags
        self._forget = forget
        self._buffer: deque[Delivery] = deque()
        # By tag, in arrival order, which is also AMQP delivery-tag order.
        self._unsettled: dict[int, DeliveredMessage] = {}
        self._arrived = asyncio.Event()
        self._closed = False
        self._closing = False  # its own close waits for the broker's answer
        self._subscription: Subscription | None = None
        self._settling = asyncio.Lock()  # see the class docstring

    @classmethod
    async def open(
        cls,
        connection: AbstractRobustConnection,
        topology: Topology,
        partition: int,
        *,
        prefetch: int,
        tags: Iterator[int],
        forget: Callable[[RabbitMQInbox], None],
    ) -> RabbitMQInbox:
        queue = topology.partition_queue(partition)
        channel = await connection.channel(publisher_confirms=False)
        inbox = cls(partition, channel, tags, forget)
        try:
            await channel.set_qos(prefetch_count=prefetch)
            await declare_partition_queue(channel, partition, topology)
            inbox._subscription = Subscription(channel, queue, inbox._on_delivery, no_ack=False)
            await inbox._subscription.start()
        except BaseException:
            await channel.close()
            raise
        return inbox

    async def _on_delivery(self, incoming: DeliveredMessage) -> None:
        if self._closed:
            # Its channel is closing, which returns it to the queue: the broker sent it
            # before it saw the close. Or a reconnect's consume raced the close and
            # the channel stays open: closed now, not left holding a prefetch window's
            # deliveries that nobody reads. Never while the close waits for its answer:
            # a second close of the channel fails the first (aiormq rejects the first's
            # wait with CancelledError; the worker's stop failed so, session 21).
            subscription = self._subscription
            if not self._closing and subscription is not None and not incoming.channel.is_closed:
                subscription.renew(incoming.channel)
            return
        tag = next(self._tags)
        self._unsettled[tag] = incoming
        redelivered = bool(getattr(incoming.delivery, "redelivered", False))
        self._buffer.append(Delivery(delivered(incoming), self.partition, tag, redelivered))
        self._arrived.set()

    async def take(self, max_count: int) -> list[Delivery]:
        """Wait for at least one delivery, then return all buffered, up to ``max_count``."""
        if max_count < 1:
            raise ValueError("max_count must be at least 1")
        while not self._buffer and not self._closed:
            self._arrived.clear()
            await self._arrived.wait()
        # Closing empties the buffer for good: a closed inbox returns [].
        return [self._buffer.popleft() for _ in range(min(max_count, len(self._buffer)))]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge, in one ``multiple`` ack when they are the oldest unsettled ones.

        A delivery whose channel was lost is skipped: the broker took it back
        and delivers it again.
        """
        async with self._settling, translated_errors("acknowledging deliveries"):
            oldest = self._are_oldest(deliveries)
            messages = self._settle(deliveries)
            if oldest and messages:
                # Of a lost channel only the older ones can be: if the newest
                # one's is live, this settles all that need it.
                await _settle_each(messages[-1:], partial(ack, multiple=True))
            else:
                await _settle_each(messages, ack)

    async def dead_letter(self, deliveries: Sequence[Delivery]) -> None:
        """Reject without requeueing: the queue dead-letters them.

        A delivery whose channel was lost is skipped, as by :meth:`ack`.
        """
        async with self._settling, translated_errors("dead-lettering deliveries"):
            await _settle_each(self._settle(deliveries), reject)

    async def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Reject those still unsettled with requeueing: the broker puts each back in
        its place (or nearer the head) and delivers it again, marked redelivered."""
        async with self._settling, translated_errors("requeueing deliveries"):
            messages = pop_still_unsettled(self._unsettled, deliveries)
            await _settle_each(messages, partial(reject, requeue=True))

    def _are_oldest(self, deliveries: Sequence[Delivery]) -> bool:
        """Whether these are exactly the oldest unsettled deliveries: then a
        ``multiple`` ack of the newest settles them and nothing else."""
        tags = sorted(delivery.tag for delivery in deliveries)
        return tags == list(islice(self._unsettled, len(tags)))

    def _settle(self, deliveries: Sequence[Delivery]) -> list[DeliveredMessage]:
        """Forget these deliveries as unsettled; returns their messages, oldest first."""
        return pop_unsettled(self._unsettled, deliveries, self.partition)

    async def close(self) -> None:
        """Stop consuming; unsettled deliveries go back to the queue, in order."""
        if self._closed:
            return
        self.abandon()
        self._closing = True
        try:
            async with translated_errors("closing an inbox"):
                # Closing the channel cancels its consumer and makes the broker
                # return its unsettled deliveries, as one step.
                await self._channel.close()
        except TransportError:
            # Closed under the close (by the broker, with the connection, or by another
            # close) is what the close was for: aio-pika opens it no more once asked to
            # close, and the broker took its deliveries back.
            if not self._channel.is_closed:
                raise
        finally:
            self._closing = False

    def abandon(self) -> None:
        """Hand out nothing more; for when the whole connection is closing."""
        self._closed = True
        if self._subscription is not None:
            self._subscription.stop()
        self._arrived.set()
        self._buffer.clear()
        self._unsettled.clear()
        self._forget(self)


async def _settle_each(
    messages: Sequence[DeliveredMessage],
    settle: Callable[[DeliveredMessage], Awaitable[None]],
) -> None:
    for message in messages:
        try:
            await settle(message)
        except aiormq.exceptions.ChannelInvalidStateError:
            # Its channel closed (a reconnect opened another one), which
            # returned the delivery to its queue: it comes again.
            log.warning(
                "delivery %s lost its channel before it was settled",
                message.header.properties.message_id,
            )
