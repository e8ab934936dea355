"""Every entity keeps its partition queue across restarts of a RabbitMQ node (a private
one): the transient hash ring is gone after each, commands are returned unroutable
rather than misrouted until a process rebuilds it, and it comes back in its order,
a growth by ``pachyderm repartition`` included. Before the ring, 373 of 400 entities
moved queue at each restart (docs/scaling.md, "The hash ring across a restart")."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import aio_pika
import aiormq
import pytest

from chaos.services import PrivateRabbitMQ, PrivateServices
from pachyderm._repartition import RepartitionError, grow_partitions
from pachyderm.transport import Message, RabbitMQTransport, Topology

from ..transport.test_rabbitmq_ring import ENTITIES, landed

pytestmark = [pytest.mark.chaos, pytest.mark.rabbitmq]


async def _through(transport: RabbitMQTransport, url: str) -> dict[str, set[int]]:
    """Where each entity's command lands, published by ``transport``."""
    for entity in ENTITIES:
        await transport.publish_command(Message(entity.encode(), routing_key=entity))
    topology = replace(transport.topology, partitions=24)
    async with await aio_pika.connect(url) as connection:
        found = await landed(await connection.channel(), topology)
    return {entity: found[entity] for entity in ENTITIES}


async def _restart(node: PrivateRabbitMQ) -> None:
    await asyncio.to_thread(node.stop)
    await asyncio.to_thread(node.start)


async def _returned(url: str, topology: Topology) -> bool:
    """Whether a command published straight to the commands exchange is returned."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(on_return_raises=True)
        exchange = await channel.get_exchange(topology.commands_exchange, ensure=False)
        try:
            await exchange.publish(aio_pika.Message(b"probe"), ENTITIES[0], mandatory=True)
        except aiormq.exceptions.PublishError:
            return True
    return False


async def test_entities_keep_their_queues_across_restarts(
    private_rabbitmq: PrivateServices, namespace: str
) -> None:
    node = private_rabbitmq.rabbitmq
    assert node is not None
    topology = Topology(namespace, 16)
    transport = RabbitMQTransport(node.url, topology)
    await transport.start()
    with pytest.raises(RepartitionError, match="did not answer"):  # no fleet: in place
        await grow_partitions(node.url, topology, 24, grace=0, timeout=0.2)
    before = await _through(transport, node.url)
    assert len(set.union(*before.values())) == 24
    await transport.close()

    await _restart(node)
    assert await _returned(node.url, topology)  # the ring is gone: nothing misrouted
    transport = RabbitMQTransport(node.url, topology)
    await transport.start()
    try:
        assert await _through(transport, node.url) == before
        # Restarted under a running transport: its reconnect rebuilds the ring.
        await _restart(node)
        deadline = time.monotonic() + 60
        while await _returned(node.url, topology):
            assert time.monotonic() < deadline, "the transport did not rebuild the ring"
            await asyncio.sleep(0.2)
        assert await _through(transport, node.url) == before
    finally:
        await transport.close()
        await RabbitMQTransport(node.url, replace(topology, partitions=24)).delete_topology()
