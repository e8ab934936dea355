"""The production transport: RabbitMQ through aio-pika.

A consistent-hash exchange spreads commands over the partition queues, so the
commands of one entity always reach the same queue, in order. Every queue that
holds work is a durable quorum queue, and publishing waits for the broker's
confirm, so an accepted message survives the loss of a broker node. The
connection is robust: aio-pika reconnects, declares again what this transport
declared and restores its consumers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from itertools import count, islice
from types import MappingProxyType
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    DeliveryMode,
    ExchangeType,
)

from .._errors import TransportError, TransportUnavailableError
from ._message import Delivery, Message
from ._port import Inbox, MessageHandler
from ._topology import Topology

log = logging.getLogger(__name__)

# The exchange type that spreads commands over the partitions comes with a plugin.
_CONSISTENT_HASH = "x-consistent-hash"
_CONSISTENT_HASH_PLUGIN = "rabbitmq_consistent_hash_exchange"
# A message delivered this many times without being settled is dead-lettered: a
# backstop against a poison message that crashes worker after worker.
_DELIVERY_LIMIT = 50
# How many effects of one group a transport hands to its handler at once.
_EFFECT_PREFETCH = 16


@asynccontextmanager
async def _translated_errors(action: str) -> AsyncIterator[None]:
    """Present aio-pika and aiormq failures as Pachyderm's transport errors."""
    try:
        yield
    except aiormq.exceptions.PublishError as error:
        raise TransportError(f"{action}: no queue is bound to take it ({error})") from error
    except (aiormq.exceptions.AMQPChannelError, aiormq.exceptions.DeliveryError) as error:
        raise TransportError(f"{action}: RabbitMQ refused ({error})") from error
    except (
        OSError,
        aiormq.exceptions.AMQPError,
        aiormq.exceptions.ChannelInvalidStateError,
    ) as error:
        raise TransportUnavailableError(f"{action}: RabbitMQ is unavailable ({error})") from error


def _to_amqp(message: Message, delivery_mode: DeliveryMode) -> aio_pika.Message:
    return aio_pika.Message(
        message.body,
        headers=dict(message.headers),
        content_type=message.content_type,
        delivery_mode=delivery_mode,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        type=message.type,
    )


def _from_amqp(incoming: AbstractIncomingMessage) -> Message:
    return Message(
        body=incoming.body,
        routing_key=incoming.routing_key or "",
        message_id=incoming.message_id,
        correlation_id=incoming.correlation_id,
        reply_to=incoming.reply_to,
        content_type=incoming.content_type,
        type=incoming.type,
        headers=MappingProxyType(dict(incoming.headers)),
    )


# -- declaring the topology ------------------------------------------------------


def _partition_queues(topology: Topology) -> list[str]:
    return [topology.partition_queue(partition) for partition in range(topology.partitions)]


async def _declare_work_queue(
    channel: AbstractChannel, name: str, topology: Topology
) -> AbstractQueue:
    """Declare a partition or effects queue: quorum, dead-lettering, delivery-limited.

    Every declaration of one queue must carry the same arguments, or the broker
    refuses it: this is the one place they are spelled out.
    """
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": topology.dead_letter_exchange,
        "x-delivery-limit": _DELIVERY_LIMIT,
    }
    return await channel.declare_queue(name, durable=True, arguments=arguments)


async def _declare_commands_exchange(
    channel: AbstractChannel, topology: Topology
) -> AbstractExchange:
    try:
        return await channel.declare_exchange(
            topology.commands_exchange, _CONSISTENT_HASH, durable=True
        )
    except aiormq.exceptions.ConnectionCommandInvalid as error:
        if "unknown exchange type" not in str(error):
            raise
        raise TransportError(
            f"RabbitMQ lacks the {_CONSISTENT_HASH!r} exchange type: enable its plugin"
            f" with `rabbitmq-plugins enable {_CONSISTENT_HASH_PLUGIN}`"
        ) from error


async def _declare_topology(
    channel: AbstractChannel, topology: Topology
) -> tuple[AbstractExchange, AbstractExchange]:
    """Declare the whole namespace; returns the commands and effects exchanges.

    Declaring is idempotent, so every process of a fleet does it on start.
    """
    # First, so that a broker without the plugin fails before anything is declared.
    commands = await _declare_commands_exchange(channel, topology)
    dead_letter = await channel.declare_exchange(
        topology.dead_letter_exchange, ExchangeType.FANOUT, durable=True
    )
    dead_letter_queue = await channel.declare_queue(
        topology.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead_letter_queue.bind(dead_letter)
    for name in _partition_queues(topology):
        queue = await _declare_work_queue(channel, name, topology)
        # A consistent-hash binding key is the queue's weight on the hash ring.
        await queue.bind(commands, routing_key="1")
    effects = await channel.declare_exchange(
        topology.effects_exchange, ExchangeType.TOPIC, durable=True
    )
    return commands, effects


# -- consuming -----------------------------------------------------------------------


class _RabbitMQInbox:
    """One partition queue, consumed on a channel of its own whose QoS is the prefetch.

    Deliveries are buffered as the broker pushes them. The ``tag`` of a
    :class:`Delivery` is the transport's own sequence number, not the AMQP
    delivery tag: AMQP tags restart on the channel a reconnect opens, and a
    delivery taken before must never settle another message under the same tag.
    """

    def __init__(
        self,
        partition: int,
        channel: AbstractChannel,
        tags: Iterator[int],
        forget: Callable[[_RabbitMQInbox], None],
    ) -> None:
        self.partition = partition
        self._channel = channel
        self._tags = tags
        self._forget = forget
        self._buffer: deque[Delivery] = deque()
        # By tag, in arrival order, which is also AMQP delivery-tag order.
        self._unsettled: dict[int, AbstractIncomingMessage] = {}
        self._arrived = asyncio.Event()
        self._closed = False

    @classmethod
    async def open(
        cls,
        connection: AbstractRobustConnection,
        topology: Topology,
        partition: int,
        *,
        prefetch: int,
        tags: Iterator[int],
        forget: Callable[[_RabbitMQInbox], None],
    ) -> _RabbitMQInbox:
        queue_name = topology.partition_queue(partition)
        channel = await connection.channel(publisher_confirms=False)
        inbox = cls(partition, channel, tags, forget)
        try:
            await channel.set_qos(prefetch_count=prefetch)
            queue = await _declare_work_queue(channel, queue_name, topology)
            await queue.consume(inbox._on_delivery)
        except BaseException:
            await channel.close()
            raise
        return inbox

    async def _on_delivery(self, incoming: AbstractIncomingMessage) -> None:
        if self._closed:
            return  # its channel is closing, which returns it to the queue
        tag = next(self._tags)
        self._unsettled[tag] = incoming
        redelivered = bool(incoming.redelivered)
        self._buffer.append(Delivery(_from_amqp(incoming), self.partition, tag, redelivered))
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
        oldest = self._are_oldest(deliveries)
        messages = self._settle(deliveries)
        async with _translated_errors("acknowledging deliveries"):
            if oldest and messages:
                # Of a lost channel only the older ones can be: if the newest
                # one's is live, this settles all that need it.
                await _settle_each(messages[-1:], lambda message: message.ack(multiple=True))
            else:
                await _settle_each(messages, lambda message: message.ack())

    async def dead_letter(self, deliveries: Sequence[Delivery]) -> None:
        """Reject without requeueing: the queue dead-letters them.

        A delivery whose channel was lost is skipped, as by :meth:`ack`.
        """
        messages = self._settle(deliveries)
        async with _translated_errors("dead-lettering deliveries"):
            await _settle_each(messages, lambda message: message.reject(requeue=False))

    def _are_oldest(self, deliveries: Sequence[Delivery]) -> bool:
        """Whether these are exactly the oldest unsettled deliveries: then a
        ``multiple`` ack of the newest settles them and nothing else."""
        tags = sorted(delivery.tag for delivery in deliveries)
        return tags == list(islice(self._unsettled, len(tags)))

    def _settle(self, deliveries: Sequence[Delivery]) -> list[AbstractIncomingMessage]:
        """Forget these deliveries as unsettled; returns their messages, oldest first."""
        tags = sorted(delivery.tag for delivery in deliveries)
        if len(set(tags)) != len(tags) or not self._unsettled.keys() >= set(tags):
            raise ValueError(
                f"deliveries {tags} are not all unsettled in the inbox of partition"
                f" {self.partition}: settled before, or returned when it closed"
            )
        return [self._unsettled.pop(tag) for tag in tags]

    async def close(self) -> None:
        """Stop consuming; unsettled deliveries go back to the queue, in order."""
        if self._closed:
            return
        self.abandon()
        async with _translated_errors("closing an inbox"):
            # Closing the channel cancels its consumer and makes the broker
            # return its unsettled deliveries, as one step.
            await self._channel.close()

    def abandon(self) -> None:
        """Hand out nothing more; for when the whole connection is closing."""
        self._closed = True
        self._arrived.set()
        self._buffer.clear()
        self._unsettled.clear()
        self._forget(self)


async def _settle_each(
    messages: Sequence[AbstractIncomingMessage],
    settle: Callable[[AbstractIncomingMessage], Awaitable[None]],
) -> None:
    for message in messages:
        try:
            await settle(message)
        except aiormq.exceptions.ChannelInvalidStateError:
            # Its channel closed (a reconnect opened another one), which
            # returned the delivery to its queue: it comes again.
            log.warning("delivery %s lost its channel before it was settled", message.message_id)


async def _deliver_reply(handler: MessageHandler, incoming: AbstractIncomingMessage) -> None:
    try:
        await handler(_from_amqp(incoming))
    except Exception:
        # Replies are consumed without acks: there is nothing to settle.
        log.exception("reply handler failed on the reply to %s", incoming.correlation_id)


async def _handle_effect(
    group: str, handler: MessageHandler, incoming: AbstractIncomingMessage
) -> None:
    try:
        await handler(_from_amqp(incoming))
    except Exception:
        log.exception(
            "effect handler of group %r failed on %s; dead-lettering it",
            group,
            incoming.message_id,
        )
        await incoming.reject(requeue=False)
    else:
        await incoming.ack()


# -- the transport -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Session:
    """What a started transport holds."""

    connection: AbstractRobustConnection
    # Publisher confirms on; an unroutable mandatory message raises.
    publisher: AbstractChannel
    # Reply and effect consumers; its QoS bounds each effect consumer.
    consumer: AbstractChannel
    commands: AbstractExchange
    effects: AbstractExchange


async def _publish(
    exchange: AbstractExchange,
    message: Message,
    action: str,
    *,
    persistent: bool,
    mandatory: bool,
) -> None:
    mode = DeliveryMode.PERSISTENT if persistent else DeliveryMode.NOT_PERSISTENT
    async with _translated_errors(action):
        await exchange.publish(_to_amqp(message, mode), message.routing_key, mandatory=mandatory)


class RabbitMQTransport:
    """The :class:`~pachyderm.transport.Transport` on RabbitMQ.

    ``url`` is an AMQP URL; ``connection_name`` labels the connection in the
    broker's management UI. The broker needs the
    ``rabbitmq_consistent_hash_exchange`` plugin.

    A message published without a ``message_id`` is given a random one:
    aio-pika's client needs it to match a returned message with its publish.
    While the connection is lost, aio-pika reconnects in the background and
    operations wait for it: bound them with a timeout where waiting is wrong.
    """

    def __init__(self, url: str, topology: Topology, *, connection_name: str | None = None) -> None:
        self.topology = topology
        self._url = url
        self._connection_name = connection_name
        self._session: _Session | None = None
        self._starting = asyncio.Lock()
        self._inboxes: set[_RabbitMQInbox] = set()
        self._effect_groups: set[str] = set()
        self._tags = count(1)

    async def start(self) -> None:
        """Connect and declare the namespace (idempotent, safe from many processes).

        Raises :class:`~pachyderm.TransportUnavailableError` when the broker
        cannot be reached, :class:`~pachyderm.TransportError` when it refuses
        the topology (a missing plugin, a queue declared with other arguments).
        """
        async with self._starting:  # callers racing to start share one connection
            if self._session is None:
                self._session = await self._open_session()

    async def _open_session(self) -> _Session:
        properties: dict[str, Any] = {}
        if self._connection_name:
            properties["connection_name"] = self._connection_name
        async with _translated_errors("connecting"):
            connection = await aio_pika.connect_robust(self._url, client_properties=properties)
        try:
            async with _translated_errors("declaring the topology"):
                publisher = await connection.channel(on_return_raises=True)
                commands, effects = await _declare_topology(publisher, self.topology)
                consumer = await connection.channel(publisher_confirms=False)
                await consumer.set_qos(prefetch_count=_EFFECT_PREFETCH)
        except BaseException:
            await connection.close()
            raise
        return _Session(connection, publisher, consumer, commands, effects)

    async def close(self) -> None:
        """Close inboxes, consumers and the connection (idempotent).

        Unsettled deliveries go back to their queues.
        """
        session, self._session = self._session, None
        for inbox in tuple(self._inboxes):
            inbox.abandon()
        if session is not None:
            # Closing the connection closes every channel on the broker's side.
            await session.connection.close()

    def _started(self) -> _Session:
        if self._session is None:
            raise TransportError("the transport is not started, or was closed")
        return self._session

    async def publish_command(self, message: Message) -> None:
        """Publish to the commands exchange, persistent; returns once confirmed.

        Raises :class:`~pachyderm.TransportError` if no partition queue is
        bound to take it, rather than let it vanish.
        """
        session = self._started()
        await _publish(
            session.commands,
            message,
            "publishing a command",
            persistent=True,
            mandatory=True,
        )

    async def publish_effect(self, message: Message) -> None:
        """Publish to the effects exchange, persistent; returns once confirmed.

        Mandatory: an effect no group's queue is bound for raises
        :class:`TransportError`, so it stays in the outbox instead of vanishing.
        """
        session = self._started()
        await _publish(
            session.effects,
            message,
            "publishing an effect",
            persistent=True,
            mandatory=True,
        )

    async def publish_reply(self, message: Message) -> None:
        """Send a reply to the queue named ``message.routing_key``, not persistent.

        The default exchange routes by queue name, and the broker drops a
        reply whose queue is gone, since replies are not mandatory.
        """
        session = self._started()
        await _publish(
            session.publisher.default_exchange,
            message,
            "publishing a reply",
            persistent=False,
            mandatory=False,
        )

    async def open_inbox(self, partition: int, prefetch: int) -> Inbox:
        """Consume one partition queue with at most ``prefetch`` unsettled deliveries."""
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        session = self._started()
        async with _translated_errors(f"opening the inbox of partition {partition}"):
            inbox = await _RabbitMQInbox.open(
                session.connection,
                self.topology,
                partition,
                prefetch=prefetch,
                tags=self._tags,
                forget=self._inboxes.discard,
            )
        self._inboxes.add(inbox)
        return inbox

    async def listen_replies(self, handler: MessageHandler) -> str:
        """Consume a queue of this connection's own; returns its name, the reply address."""
        session = self._started()
        # Named here rather than by the broker so that the address survives a
        # reconnect: aio-pika declares the queue again under the same name.
        name = f"{self.topology.namespace}.replies.{uuid.uuid4().hex}"
        async with _translated_errors("listening for replies"):
            queue = await session.consumer.declare_queue(name, exclusive=True, auto_delete=True)
            await queue.consume(partial(_deliver_reply, handler), no_ack=True)
        return name

    async def consume_effects(
        self, group: str, routing_keys: Sequence[str], handler: MessageHandler
    ) -> None:
        """Consume the durable queue of ``group``, bound for each of ``routing_keys``.

        A message is acknowledged once ``handler`` returns and dead-lettered if
        it raises. Up to 16 messages of a group are handled at once. Bindings
        accumulate: keys a group no longer wants must be unbound by hand.
        """
        session = self._started()
        self._effect_groups.add(group)
        async with _translated_errors(f"consuming the effects of {group!r}"):
            queue = await _declare_work_queue(
                session.consumer, self.topology.effects_queue(group), self.topology
            )
            for routing_key in routing_keys:
                await queue.bind(session.effects, routing_key=routing_key)
            await queue.consume(partial(_handle_effect, group, handler))

    async def queue_depths(self) -> dict[str, int]:
        """Messages ready in each partition queue and in the dead-letter queue.

        Deliveries not yet settled are not counted.
        """
        session = self._started()
        names = [*_partition_queues(self.topology), self.topology.dead_letter_queue]
        # A channel of its own: asking about a missing queue closes the channel.
        async with (
            _translated_errors("reading queue depths"),
            session.connection.channel(publisher_confirms=False) as channel,
        ):
            return {name: await _ready_count(channel, name) for name in names}

    async def delete_topology(self) -> None:
        """Close this transport, then delete the namespace from the broker.

        Deletes the exchanges, the partition and dead-letter queues and the
        effects queues of the groups this transport consumed (AMQP cannot list
        the others), with every message they hold. For tests and for retiring
        a namespace: close the namespace's other transports first, or their
        robust connections would declare it again.
        """
        await self.close()
        topology = self.topology
        queues = [
            *_partition_queues(topology),
            topology.dead_letter_queue,
            *map(topology.effects_queue, sorted(self._effect_groups)),
        ]
        exchanges = [
            topology.commands_exchange,
            topology.effects_exchange,
            topology.dead_letter_exchange,
        ]
        # A short-lived connection of its own: this transport's is closed by now.
        async with (
            _translated_errors("deleting the topology"),
            await aio_pika.connect(self._url) as connection,
        ):
            channel = await connection.channel()
            for queue in queues:
                await channel.queue_delete(queue)
            for exchange in exchanges:
                await channel.exchange_delete(exchange)


async def _ready_count(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0
