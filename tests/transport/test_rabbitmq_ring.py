"""The hash ring on the machine's RabbitMQ: built in order, rebuilt at once by many,
and a namespace of the older layout (queues bound to the commands exchange itself)
moved to it without moving an entity, even for commands published meanwhile.
Restarts, which drop the ring, are in tests/chaos/test_ring_restart.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import aio_pika
import aiormq
import pytest

from pachyderm.transport import RabbitMQTransport, Topology, _rabbitmq_ring
from pachyderm.transport._rabbitmq_topology import declare_partition_queue, declare_topology

pytestmark = pytest.mark.rabbitmq

PARTITIONS = 8
ENTITIES = [str(uuid.UUID(int=n * 104729 + 7)) for n in range(200)]


@pytest.fixture
async def channel(rabbitmq_url: str, namespace: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    async with await aio_pika.connect(rabbitmq_url) as connection:
        yield await connection.channel()
    transport = RabbitMQTransport(rabbitmq_url, Topology(namespace, PARTITIONS))
    await transport.delete_topology()


async def _publish(channel: aio_pika.abc.AbstractChannel, topology: Topology) -> None:
    exchange = await channel.get_exchange(topology.commands_exchange, ensure=False)
    for entity in ENTITIES:
        await exchange.publish(aio_pika.Message(entity.encode()), entity, mandatory=True)


async def landed(channel: aio_pika.abc.AbstractChannel, topology: Topology) -> dict[str, set[int]]:
    """Each entity's partitions, over everything its queues hold (emptied)."""
    found: dict[str, set[int]] = {}
    for partition in range(topology.partitions):
        queue = await channel.get_queue(topology.partition_queue(partition), ensure=False)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            found.setdefault(message.body.decode(), set()).add(partition)
    return found


async def _older_layout(channel: aio_pika.abc.AbstractChannel, topology: Topology) -> None:
    """The namespace as releases before the ring declared it: each queue bound to the
    commands exchange when created, in order; a growth's exchange bound to it too."""
    commands = await channel.declare_exchange(
        topology.commands_exchange, _rabbitmq_ring.CONSISTENT_HASH, durable=True
    )
    base = replace(topology, partitions=PARTITIONS - 3)
    for partition in range(base.partitions):
        queue = await declare_partition_queue(channel, partition, topology)
        await queue.bind(commands, routing_key="1")
    growth = await channel.declare_exchange(
        base.growth_exchange(PARTITIONS), _rabbitmq_ring.CONSISTENT_HASH, durable=True
    )
    for partition in range(base.partitions, PARTITIONS):
        queue = await declare_partition_queue(channel, partition, topology)
        await queue.bind(growth, routing_key="1")
    await growth.bind(commands, routing_key="3")


async def test_the_older_layout_moves_to_the_ring_without_moving_an_entity(
    channel: aio_pika.abc.AbstractChannel, rabbitmq_url: str, namespace: str
) -> None:
    topology = Topology(namespace, PARTITIONS)
    await _older_layout(channel, topology)
    await _publish(channel, topology)
    before = await landed(channel, topology)
    assert all(len(partitions) == 1 for partitions in before.values())
    assert len(set.union(*before.values())) == PARTITIONS

    async def publishing() -> None:
        async with await aio_pika.connect(rabbitmq_url) as connection:
            other = await connection.channel()
            for _ in range(5):
                await _publish(other, topology)

    # Commands published while the ring replaces the old bindings one by one.
    during = asyncio.ensure_future(publishing())
    async with await aio_pika.connect(rabbitmq_url) as connection:
        assert await _rabbitmq_ring.build_ring(await connection.channel(), topology) == (
            _rabbitmq_ring.Layout(PARTITIONS - 3, ((PARTITIONS - 3, PARTITIONS),))
        )
    await during
    await _publish(channel, topology)
    assert await landed(channel, topology) == before
    # Nothing of the old layout routes any more: without the ring, nothing does.
    await channel.exchange_delete(topology.ring_exchange)
    async with await aio_pika.connect(rabbitmq_url) as connection:
        returning = await connection.channel(on_return_raises=True)
        with pytest.raises(aiormq.exceptions.PublishError):
            await _publish(returning, topology)


async def test_processes_rebuilding_the_ring_at_once_build_one_ring(
    channel: aio_pika.abc.AbstractChannel, rabbitmq_url: str, namespace: str
) -> None:
    topology = Topology(namespace, PARTITIONS)
    async with await aio_pika.connect(rabbitmq_url) as connection:
        await declare_topology(await connection.channel(), topology)
    await _publish(channel, topology)
    alone = await landed(channel, topology)
    for _ in range(3):
        await channel.exchange_delete(topology.ring_exchange)
        connections = [await aio_pika.connect(rabbitmq_url) for _ in range(4)]
        try:
            builds = [_rabbitmq_ring.build_ring(await c.channel(), topology) for c in connections]
            await asyncio.gather(*builds)
        finally:
            for connection in connections:
                await connection.close()
        await _publish(channel, topology)
        assert await landed(channel, topology) == alone
