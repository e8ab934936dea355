"""The event relay: committed events published to the AMQP topic exchange ``<ns>.events``.

Register it like any projection (``App(..., projections=[EventRelay()])``) and
run ``pachyderm projections APP``; services in any language then bind a queue
of their own to ``<ns>.events`` (``#`` for everything, ``account.*``,
``*.Deposited``...). Each event becomes one persistent message: routing key
``<entity type>.<event name>``, body the event's data as msgpack,
``message_id`` its stable event id, ``type`` its name, and the headers
``pachyderm-entity-type``, ``-entity-id``, ``-version``, ``-partition``,
``-position``, ``-recorded-at`` and ``-schema-version`` (the version of the
event's type it was written with).

Invariants: a batch's messages are published in log order on one channel, in
one write (so each entity's in version order), and all confirmed by the broker before
``apply_many`` returns, and only then does the runner advance the cursor: at
least once, a runner stopped in between publishes them again, under the same
``message_id``. Not mandatory: an event no queue is bound for is dropped, as a
topic exchange does. The relay opens its own connection (aio-pika, imported
only with this module) on its first batch, from ``PACHYDERM_AMQP_URL`` and
``PACHYDERM_NAMESPACE`` unless given, and declares the exchange.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection, DeliveryMode
from aiormq.abc import ChannelFrame, FrameType
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from .._app import App
from .._codec import MSGPACK
from .._errors import PachydermError
from .._projection import AnyEvent, Projection, ProjectionContext
from .._settings import load_settings
from ..transport._amqp import properties, translated_errors, underlay
from ..transport._broker_addresses import connect_to_broker
from ..transport._message import Message
from ..transport._rabbitmq_topology import declare_events_exchange
from ..transport._topology import Topology

HEADER_PREFIX = "pachyderm-"
# A batch not confirmed within this many seconds fails (and is published again by the
# runner's retry) rather than hold its partition for good.
CONFIRM_TIMEOUT = 30.0


def relayed_message(app: App, event: Any, context: ProjectionContext) -> Message:
    """The message the relay publishes for ``event`` (its exchange aside): the bytes
    as stored when the context has them (an event an older class wrote goes out as
    it was written, with the schema version it was written with), else as the
    event's class encodes it."""
    schema_version: int | None
    if context.name:
        name, data, schema_version = context.name, context.data, context.schema_version
    else:
        encoded = app.entity_type(context.entity_type).encode_event(event)
        name, data, schema_version = encoded.name, encoded.data, encoded.schema_version
    headers: dict[str, Any] = {
        f"{HEADER_PREFIX}entity-type": context.entity_type,
        f"{HEADER_PREFIX}entity-id": str(context.entity_id),
        f"{HEADER_PREFIX}version": context.version,
        f"{HEADER_PREFIX}partition": context.partition,
        f"{HEADER_PREFIX}position": context.position,
        f"{HEADER_PREFIX}recorded-at": context.recorded_at.isoformat(),
    }
    if schema_version is not None:
        headers[f"{HEADER_PREFIX}schema-version"] = schema_version
    return Message(
        body=data,
        routing_key=f"{context.entity_type}.{name}",
        message_id=str(context.event_id),
        content_type=MSGPACK,
        type=name,
        headers=headers,
    )


def _frames(channel: aiormq.Channel, exchange: str, message: Message) -> list[FrameType]:
    body, size = message.body, channel.max_content_size
    return [
        Basic.Publish(exchange=exchange, routing_key=message.routing_key),
        ContentHeader(properties=properties(message, DeliveryMode.PERSISTENT), body_size=len(body)),
        *(ContentBody(body[start : start + size]) for start in range(0, len(body), size)),
    ]


async def publish_confirmed(
    channel: aiormq.Channel, exchange: str, messages: Sequence[Message]
) -> None:
    """Publish ``messages`` in order, persistent, in one write; returns once the broker
    confirmed every one (a nack raises).

    aiormq publishes a message at a time, each waiting until it is written: several
    times slower for a batch. This does for each message what its ``basic_publish``
    does (the next delivery tag and a confirmation awaited on it, under the channel's
    lock, so no other publish takes a tag meanwhile) and hands the socket one frame.
    """
    frames = [frame for message in messages for frame in _frames(channel, exchange, message)]
    confirmations: list[asyncio.Future[Any]] = []
    async with channel.lock:
        before = channel.delivery_tag
        for _ in messages:
            channel.delivery_tag += 1
            confirmation = channel.create_future()
            channel.confirmations[channel.delivery_tag] = confirmation
            confirmations.append(confirmation)
        written = channel.create_future()
        try:
            await channel.write_queue.put(
                ChannelFrame.marshall(channel.number, frames, drain_future=written)
            )
        except BaseException:
            # Never sent, so never numbered by the broker: give the tags back, or the
            # broker's confirms of later publishes would settle the wrong futures.
            for tag in range(before + 1, channel.delivery_tag + 1):
                channel.confirmations.pop(tag, None)
            channel.delivery_tag = before
            for confirmation in confirmations:
                confirmation.cancel()
            raise
        await written
    await asyncio.gather(*confirmations)


class EventRelay(Projection):
    """Publishes every committed event of the app to ``<namespace>.events``, at least once,
    in per-entity order (see the module's documentation)."""

    name = "event_relay"
    events = (AnyEvent,)
    decodes = False  # every event goes on once, as written, whatever this code reads

    def __init__(self, *, amqp_url: str | None = None, namespace: str | None = None) -> None:
        self._amqp_url = amqp_url
        self._namespace = namespace
        self._app: App | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._topology: Topology | None = None
        self._opening = asyncio.Lock()

    def registered(self, app: object) -> None:
        if not isinstance(app, App):
            raise TypeError(f"the event relay is registered by an App, not {app!r}")
        self._app = app

    async def apply(self, event: Any, context: ProjectionContext) -> None:
        await self.apply_many([(event, context)])

    async def apply_many(self, batch: Sequence[tuple[Any, ProjectionContext]]) -> None:
        """Publish the batch in order; returns once the broker confirmed every message."""
        if self._app is None:
            raise PachydermError("the event relay runs only once an App has registered it")
        if not batch:
            return
        app = self._app
        messages = [relayed_message(app, event, context) for event, context in batch]
        channel, exchange = await self._open()
        async with translated_errors("relaying events"), asyncio.timeout(CONFIRM_TIMEOUT):
            current = await underlay(channel)
            if not isinstance(current, aiormq.Channel) or not current.publisher_confirms:
                raise TypeError(f"not a channel with publisher confirms: {current!r}")
            await publish_confirmed(current, exchange, messages)

    async def _open(self) -> tuple[AbstractChannel, str]:
        async with self._opening:  # the runners of every partition share one connection
            if self._channel is None or self._topology is None:
                url, topology = self._where()
                async with translated_errors("connecting the event relay"):
                    connection = await connect_to_broker(
                        url, client_properties={"connection_name": "pachyderm event relay"}
                    )
                    try:
                        channel = await connection.channel(publisher_confirms=True)
                        await declare_events_exchange(channel, topology)
                    except BaseException:
                        await connection.close()
                        raise
                self._connection, self._channel, self._topology = connection, channel, topology
            return self._channel, self._topology.events_exchange

    def _where(self) -> tuple[str, Topology]:
        """The broker's URL and the namespace's topology: as given, else from the settings."""
        if self._amqp_url is not None and self._namespace is not None:
            return self._amqp_url, Topology(self._namespace)
        settings = load_settings()
        url = self._amqp_url or settings.amqp_url.get_secret_value()
        return url, Topology(self._namespace or settings.namespace)

    async def close(self) -> None:
        """Close the relay's connection (idempotent); a later batch opens it again."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await connection.close()
