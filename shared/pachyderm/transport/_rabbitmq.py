"""The production transport: RabbitMQ, through aio-pika's robust connection.

Publishing a command or an effect waits for the broker's confirm, so an
accepted message survives the loss of a broker node (quorum queues). The
connection is robust: aio-pika reconnects and declares again what this
transport declared, and every consumer consumes again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from functools import partial
from itertools import count
from typing import Any

from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.abc import DeliveredMessage
from pamqp.commands import Queue

from .._errors import TransportError
from ._amqp import (
    Subscription,
    ack,
    delivered,
    publish,
    publish_transient,
    reject,
    translated_errors,
)
from ._broker_addresses import connect_to_broker
from ._message import Message
from ._port import Inbox, MessageHandler, RoutedAgain
from ._rabbitmq_dead_letters import (
    DeadLetteredEffect,
    list_dead_lettered_effects,
    replay_dead_lettered_effects,
)
from ._rabbitmq_inbox import RabbitMQInbox
from ._rabbitmq_ring import build_ring, layout, partitioning_exchanges, publish_routed
from ._rabbitmq_topology import (
    declare_topology,
    declare_work_queue,
    grown_queue,
    partition_queues,
    partitions_past,
)
from ._rabbitmq_unrouted import route_again
from ._reply_bundles import bundled, bundling_address, unbundled
from ._topology import Topology

log = logging.getLogger(__name__)

# How many effects of one group a transport hands to its handler at once.
_EFFECT_PREFETCH = 16


async def _deliver_reply(handler: MessageHandler, incoming: DeliveredMessage) -> None:
    try:
        for reply in unbundled(delivered(incoming)):
            await handler(reply)
    except Exception:
        # Replies are consumed without acks: there is nothing to settle.
        log.exception(
            "reply handler failed on the reply to %s", incoming.header.properties.correlation_id
        )


async def _handle_effect(group: str, handler: MessageHandler, incoming: DeliveredMessage) -> None:
    try:
        await handler(delivered(incoming))
    except Exception:
        log.exception(
            "effect handler of group %r failed on %s; dead-lettering it",
            group,
            incoming.header.properties.message_id,
        )
        await reject(incoming)
    else:
        await ack(incoming)


# -- the transport -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Session:
    """What a started transport holds."""

    connection: AbstractRobustConnection
    # Publisher confirms on; an unroutable mandatory message raises.
    publisher: AbstractChannel
    # No confirms: a reply lost with the connection is asked for again by its
    # caller, and gets the answer recorded with the command.
    replier: AbstractChannel
    # Reply and effect consumers; its QoS bounds each effect consumer.
    consumer: AbstractRobustChannel
    effects: AbstractExchange


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
        self._reconnects = 0
        self._inboxes: set[RabbitMQInbox] = set()
        self._effect_groups: set[str] = set()
        self._tags = count(1)
        self._rebuilding: asyncio.Future[None] | None = None

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
        async with translated_errors("connecting"):
            connection = await connect_to_broker(self._url, client_properties=properties)
        try:
            async with translated_errors("declaring the topology"):
                publisher = await connection.channel(on_return_raises=True)
                effects = await declare_topology(publisher, self.topology)
                replier = await connection.channel(publisher_confirms=False)
                consumer = await connection.channel(publisher_confirms=False)
                await consumer.set_qos(prefetch_count=_EFFECT_PREFETCH)
        except BaseException:
            await connection.close()
            raise
        connection.reconnect_callbacks.add(self._on_reconnect)
        return _Session(connection, publisher, replier, consumer, effects)

    @property
    def reconnects(self) -> int:
        """How many times the connection was lost and made again: its channels were then
        restored by aio-pika, not opened anew (a worker opens its partitions again)."""
        return self._reconnects

    def _on_reconnect(self, _connection: object, /) -> None:
        """The broker may have restarted, and its transient hash ring with it
        (:mod:`._rabbitmq_ring`): until a process rebuilds it, commands are returned
        unroutable. Rebuilt in a task: the reconnect completes first."""
        self._reconnects += 1
        if self._session is not None:
            self._rebuilding = asyncio.ensure_future(self._build_ring(self._session.connection))
            self._rebuilding.add_done_callback(_report_unbuilt)

    async def _rebuild_ring(self, connection: AbstractRobustConnection) -> None:
        """Rebuild the hash ring, once for every caller that asks while it is rebuilt
        (every publish the ring's loss returned asks)."""
        if self._rebuilding is None or self._rebuilding.done():
            self._rebuilding = asyncio.ensure_future(self._build_ring(connection))
        await asyncio.shield(self._rebuilding)

    async def _build_ring(self, connection: AbstractRobustConnection) -> None:
        """On a channel of its own: its probes close the channel they ask on, which
        must not be one that others publish on meanwhile."""
        async with (
            translated_errors("rebuilding the hash ring"),
            connection.channel(publisher_confirms=False) as channel,
        ):
            await build_ring(channel, self.topology)

    async def close(self) -> None:
        """Close inboxes, consumers and the connection (idempotent).

        Unsettled deliveries go back to their queues.
        """
        session, self._session = self._session, None
        if self._rebuilding is not None:
            self._rebuilding.cancel()
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
        bound to take it, rather than let it vanish (once the hash ring, gone with
        a broker restart, was rebuilt: see :mod:`._rabbitmq_ring`).
        """
        session = self._started()
        rebuild = partial(self._rebuild_ring, session.connection)
        await publish_routed(session.publisher, self.topology, message, rebuild)

    async def publish_effect(self, message: Message) -> None:
        """Publish to the effects exchange, persistent; returns once confirmed.

        An effect no group's queue is bound for goes to the exchange's
        alternate exchange, whose queue keeps it for :meth:`route_waiting_effects`.
        """
        session = self._started()
        await publish(
            session.publisher,
            self.topology.effects_exchange,
            message,
            "publishing an effect",
        )

    async def route_waiting_effects(self) -> RoutedAgain:
        """Publish the effects waiting in ``<ns>.effects-unrouted`` again, one by one."""
        session = self._started()
        # A channel of its own: the pass takes its time, and a failure closes only it.
        async with (
            translated_errors("routing waiting effects again"),
            session.connection.channel() as channel,
        ):
            return await route_again(channel, self.topology)

    async def dead_lettered_effects(self) -> list[DeadLetteredEffect]:
        """The effects waiting in ``<ns>.dead-letter``, oldest first; they stay there."""
        session = self._started()
        async with translated_errors("reading dead-lettered effects"):
            return await list_dead_lettered_effects(session.connection, self.topology)

    async def replay_dead_lettered_effects(
        self, effect_ids: Collection[str] | None = None
    ) -> list[DeadLetteredEffect]:
        """Publish dead-lettered effects (of ``effect_ids``; all when None) to the effects
        exchange again, each removed from the dead-letter queue only once the broker
        confirmed its copy; returns those replayed."""
        session = self._started()
        async with translated_errors("replaying dead-lettered effects"):
            return await replay_dead_lettered_effects(session.connection, self.topology, effect_ids)

    async def publish_replies(self, messages: Sequence[Message]) -> None:
        """Send replies, each to the queue its ``routing_key`` names, not persistent.

        The default exchange routes by queue name, and the broker drops a
        reply whose queue is gone, since replies are not mandatory. All of them
        go out in one write, those to one caller that reads bundles (as this
        transport's listeners do) as few messages (:mod:`._reply_bundles`); returns once
        it is done, unconfirmed: while the connection is lost, it waits for the reconnect.
        """
        session = self._started()
        if messages:
            await publish_transient(
                session.replier, bundled(self.topology.namespace, messages), "publishing replies"
            )

    async def open_inbox(self, partition: int, prefetch: int) -> Inbox:
        """Consume one partition queue with at most ``prefetch`` unsettled deliveries."""
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        session = self._started()
        async with translated_errors(f"opening the inbox of partition {partition}"):
            inbox = await RabbitMQInbox.open(
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
        name = bundling_address(self.topology.namespace, uuid.uuid4().hex)
        async with translated_errors("listening for replies"):
            await session.consumer.declare_queue(name, exclusive=True, auto_delete=True)
            deliver = partial(_deliver_reply, handler)
            await Subscription(session.consumer, name, deliver, no_ack=True).start()
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
        async with translated_errors(f"consuming the effects of {group!r}"):
            queue = await declare_work_queue(
                session.consumer, self.topology.effects_queue(group), self.topology
            )
            for routing_key in routing_keys:
                await queue.bind(session.effects, routing_key=routing_key)
            handle = partial(_handle_effect, group, handler)
            await Subscription(session.consumer, queue.name, handle, no_ack=False).start()

    async def queue_depths(self) -> dict[str, int]:
        """Messages ready in each partition queue, the dead-letter queue and the
        unrouted-effects queue.

        Deliveries not yet settled are not counted.
        """
        session = self._started()
        names = [
            *partition_queues(self.topology),
            self.topology.dead_letter_queue,
            self.topology.unrouted_effects_queue,
        ]
        # A channel of its own: asking about a missing queue closes the channel.
        async with (
            translated_errors("reading queue depths"),
            session.connection.channel(publisher_confirms=False) as channel,
        ):
            return {name: await _ready_count(channel, name) for name in names}

    async def partition_consumers(self) -> list[int]:
        """The number of consumers of each partition queue (0: no worker serves it)."""
        session = self._started()
        async with (
            translated_errors("counting partition consumers"),
            session.connection.channel(publisher_confirms=False) as channel,
        ):
            return [
                (await _declared(channel, name)).consumer_count or 0
                for name in partition_queues(self.topology)
            ]

    async def delete_topology(self) -> None:
        """Close this transport, then delete the namespace from the broker.

        Deletes the exchanges, the partition, dead-letter and unrouted queues and the
        effects queues of the groups this transport consumed (AMQP cannot list
        the others), with every message they hold. A namespace grown past this
        transport's count (``pachyderm repartition``) loses its added queues and its
        growth exchanges too. For tests and for retiring a namespace: close the
        namespace's other transports first, or their robust connections would
        declare it again.
        """
        await self.close()
        # A short-lived connection of its own: this transport's is closed by now.
        async with (
            translated_errors("deleting the topology"),
            await connect_to_broker(self._url) as connection,
        ):
            channel = await connection.channel()
            found = await layout(channel, self.topology)
            # The namespace's own count, if `pachyderm repartition` grew it past this one's.
            topology = replace(self.topology, partitions=found.partitions)
            queues = [
                *partition_queues(topology),
                # A growth stopped before its record (its queues declared first) has
                # queues past the count the layout says.
                *[grown_queue(topology, p) async for p, _ in partitions_past(channel, topology)],
                topology.dead_letter_queue,
                topology.unrouted_effects_queue,
                *map(topology.effects_queue, sorted(self._effect_groups)),
            ]
            exchanges = [
                *partitioning_exchanges(self.topology, found),
                topology.commands_exchange,
                topology.effects_exchange,
                topology.unrouted_effects_exchange,
                topology.dead_letter_exchange,
                topology.events_exchange,  # the event relay's, if it ran
            ]
            for queue in queues:
                await channel.queue_delete(queue)
            for exchange in exchanges:
                await channel.exchange_delete(exchange)


def _report_unbuilt(rebuilt: asyncio.Future[None]) -> None:
    """Log a rebuild after a reconnect that failed: the next publish rebuilds it again."""
    if not rebuilt.cancelled() and (error := rebuilt.exception()) is not None:
        log.warning("the hash ring was not rebuilt after a reconnect: %s", error)


async def _declared(channel: AbstractChannel, queue: str) -> Queue.DeclareOk:
    """What the broker says of an existing queue (a missing one closes the channel)."""
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result


async def _ready_count(channel: AbstractChannel, queue: str) -> int:
    return (await _declared(channel, queue)).message_count or 0
