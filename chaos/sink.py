"""The effects sink: an effect group of its own that consumes everything a namespace's
entities publish to its effects exchange, and a reader of its dead-letter queue.

Its queue is the product's effects queue of group ``chaos_sink``
(``<ns>.effects.chaos_sink``, durable, quorum) bound with ``effect.#``, consumed
through :meth:`~pachyderm.transport.Transport.consume_effects`, the path every
dispatcher takes (acks written as the product writes them, a consumer restored
after each reconnect): an effect confirmed to a worker before a broker restart
is still there after it, so the sink sees every effect that reached the broker,
and an effect it misses is one a dispatcher would have missed. (Session 16's
first long run lost 1,704 effects to a plain aio-pika consumer here, whose acks
and restores were the harness's own; :meth:`EffectSink.queue_state` tells at the
end whether the missing ones still sat in the queue.)

It binds its queue when told (:meth:`EffectSink.bind`), as a dispatcher does
when it starts: until then no queue is bound for any effect to a handler, and
the product keeps them in ``<ns>.effects-unrouted``. Once bound, the sink
routes those again as a dispatcher does, through the product's own
:meth:`~pachyderm.transport.Transport.route_waiting_effects`: at once, and
again whenever the run asks (:meth:`EffectSink.route_waiting`, while it
settles: an effect published just before the binding may reach the unrouted
queue just after the first pass). Not in the background while faults run: a
pass during a broker restart is the product's to survive (see
``pachyderm.EffectDispatcher``), not the harness's.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from aio_pika.abc import AbstractRobustConnection

from pachyderm.transport import Message, RabbitMQTransport, Topology, connect_to_broker

from .checker import SeenEffect

SINK_GROUP = "chaos_sink"


class EffectSink:
    """Records each effect delivery (duplicates included); async context manager."""

    def __init__(self, amqp_url: str, topology: Topology) -> None:
        self.amqp_url = amqp_url
        self.topology = topology
        self.seen: list[SeenEffect] = []
        self.routed_again = 0  # effects taken from the unrouted queue and published again
        self._connection: AbstractRobustConnection | None = None
        self._dispatcher: RabbitMQTransport | None = None

    @property
    def bound(self) -> bool:
        return self._dispatcher is not None

    async def __aenter__(self) -> EffectSink:
        self._connection = await connect_to_broker(
            self.amqp_url, client_properties={"connection_name": "chaos-sink"}
        )
        return self

    async def bind(self) -> None:
        """Bind and consume the sink's queue, then route the waiting effects again, as a
        dispatcher starting does."""
        self._dispatcher = RabbitMQTransport(
            self.amqp_url, self.topology, connection_name="chaos-sink-dispatcher"
        )
        await self._dispatcher.start()
        await self._dispatcher.consume_effects(SINK_GROUP, ["effect.#"], self._on_effect)
        await self.route_waiting()

    async def route_waiting(self) -> None:
        """One pass of the product over the effects that waited for a queue."""
        assert self._dispatcher is not None
        routed = await self._dispatcher.route_waiting_effects()
        self.routed_again += routed.taken

    async def _on_effect(self, message: Message) -> None:
        headers = message.headers
        self.seen.append(
            SeenEffect(
                effect_id=message.message_id or "",
                routing_key=message.routing_key,
                source_entity=str(headers.get("pachyderm-source-entity-id", "")),
                source_command=str(headers.get("pachyderm-source-command-id", "")),
                payload=message.body,
            )
        )

    async def queue_state(self) -> dict[str, int] | None:
        """The sink queue's ready messages and consumers now (None before it is bound):
        effects never seen but still ready there point at the consumer, not the outbox."""
        if not self.bound:
            return None
        assert self._connection is not None
        async with self._connection.channel() as channel:
            queue = await channel.declare_queue(
                self.topology.effects_queue(SINK_GROUP), passive=True
            )
        result = queue.declaration_result
        return {"ready": result.message_count or 0, "consumers": result.consumer_count or 0}

    async def dead_letters(self) -> set[tuple[str, str]]:
        """(entity id, message id) of each command in the dead-letter queue, left in place."""
        assert self._connection is not None
        found: set[tuple[str, str]] = set()
        async with self._connection.channel() as channel:
            queue = await channel.get_queue(self.topology.dead_letter_queue, ensure=True)
            taken = []
            while (message := await queue.get(fail=False, no_ack=False)) is not None:
                found.add((message.routing_key or "", message.message_id or ""))
                taken.append(message)
            for message in taken:  # back to the queue, for an operator to look at
                await message.nack(requeue=True)
        return found

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._dispatcher is not None:
            await self._dispatcher.close()
        if self._connection is None:
            return
        if self.bound:
            async with self._connection.channel() as channel:
                await channel.queue_delete(self.topology.effects_queue(SINK_GROUP))
        await self._connection.close()


async def settled(sink: EffectSink, expected: set[str], timeout: float) -> bool:
    """Wait until the sink has seen every effect id in ``expected``; whether it did."""
    deadline = asyncio.get_running_loop().time() + timeout
    while expected - {seen.effect_id for seen in sink.seen}:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True
