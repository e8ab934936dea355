"""The transport contract on the machine's RabbitMQ, plus what only RabbitMQ does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest

from pachyderm import TransportError, TransportUnavailableError
from pachyderm.transport import Message, RabbitMQTransport, Topology, _rabbitmq

from .contract import (
    PARTITIONS,
    DeadLetters,
    TransportContract,
    collect,
    command,
    eventually,
    only_ready_partition,
)

TransportFactory = Callable[[], Awaitable[RabbitMQTransport]]


@pytest.fixture
async def open_transport(rabbitmq_url: str, namespace: str) -> AsyncIterator[TransportFactory]:
    """Start transports on the test's namespace; at teardown close them all, then
    delete the namespace (each deletes the effects queues it consumed)."""
    opened: list[RabbitMQTransport] = []

    async def factory() -> RabbitMQTransport:
        transport = RabbitMQTransport(
            rabbitmq_url, Topology(namespace, PARTITIONS), connection_name=f"test {namespace}"
        )
        opened.append(transport)
        await transport.start()
        return transport

    yield factory
    for transport in opened:
        await transport.close()
    for transport in opened:
        await transport.delete_topology()


@pytest.fixture
async def transport(open_transport: TransportFactory) -> RabbitMQTransport:
    return await open_transport()


@pytest.fixture
async def broker(rabbitmq_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel of the test's own, to look at or tamper with the broker directly."""
    async with await aio_pika.connect(rabbitmq_url) as connection:
        yield await connection.channel()


@pytest.fixture
def dead_lettered(
    transport: RabbitMQTransport, broker: aio_pika.abc.AbstractChannel
) -> DeadLetters:
    async def read(count: int) -> list[Message]:
        queue = await broker.declare_queue(transport.topology.dead_letter_queue, passive=True)
        messages: list[Message] = []

        async def read_all() -> bool:
            incoming = await queue.get(no_ack=True, fail=False)
            if incoming is not None:
                messages.append(Message(incoming.body, message_id=incoming.message_id))
            return len(messages) >= count

        await eventually(read_all)
        return messages

    return read


class TestRabbitMQTransport(TransportContract):
    pass


async def test_transports_of_one_namespace_share_it(open_transport: TransportFactory) -> None:
    publisher, consumer = await open_transport(), await open_transport()
    await publisher.publish_command(command("shared", b"across"))
    inbox = await consumer.open_inbox(await only_ready_partition(consumer), prefetch=1)
    [delivery] = await collect(inbox, 1)
    assert delivery.message.body == b"across"


async def test_a_command_no_partition_queue_takes_raises(
    transport: RabbitMQTransport, broker: aio_pika.abc.AbstractChannel
) -> None:
    for partition in range(PARTITIONS):
        await broker.queue_delete(transport.topology.partition_queue(partition))
    with pytest.raises(TransportError, match="no queue is bound"):
        await transport.publish_command(command("lost"))


async def test_a_queue_declared_otherwise_is_reported(
    open_transport: TransportFactory,
    namespace: str,
    broker: aio_pika.abc.AbstractChannel,
) -> None:
    partition_queue = Topology(namespace, PARTITIONS).partition_queue(0)
    await broker.declare_queue(partition_queue, durable=True)  # classic, not quorum
    with pytest.raises(TransportError, match="PRECONDITION_FAILED") as raised:
        await open_transport()
    assert not isinstance(raised.value, TransportUnavailableError)


async def test_a_missing_exchange_type_names_its_plugin(
    open_transport: TransportFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker's plugin cannot be disabled from a test; an exchange type no
    # plugin provides gets the same answer from the broker.
    monkeypatch.setattr(_rabbitmq, "_CONSISTENT_HASH", "x-pachyderm-test-missing")
    with pytest.raises(TransportError, match="rabbitmq-plugins enable rabbitmq_consistent_hash"):
        await open_transport()


async def test_an_unreachable_broker_is_unavailable(namespace: str) -> None:
    transport = RabbitMQTransport("amqp://guest:guest@127.0.0.1:1/", Topology(namespace))
    with pytest.raises(TransportUnavailableError, match="connecting"):
        await transport.start()
