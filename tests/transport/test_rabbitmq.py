"""The transport contract on the machine's RabbitMQ, plus what only RabbitMQ does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

import aio_pika
import aiormq
import pytest

from chaos.worker import cut_broker_sockets
from pachyderm import TransportError, TransportUnavailableError
from pachyderm._repartition import RepartitionError, grow_partitions
from pachyderm.testing import DeadLetters, TransportContract
from pachyderm.testing._transport_contract import (
    collect,
    command,
    eventually,
    nothing_more,
    only_ready_partition,
    publish_commands,
)
from pachyderm.transport import (
    Message,
    RabbitMQTransport,
    Topology,
    _rabbitmq_inbox,
    _rabbitmq_ring,
    _rabbitmq_topology,
    connect_to_broker,
)
from pachyderm.transport import _rabbitmq as rabbitmq_transport
from pachyderm.transport._amqp import underlay
from pachyderm.transport._rabbitmq_topology import declare_partition_queue
from pachyderm.transport._topology import MAX_PARTITIONS

PARTITIONS = 4
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


async def test_deliveries_of_a_lost_channel_come_again_and_settle_harmlessly(
    transport: RabbitMQTransport,
) -> None:
    bodies = await publish_commands(transport, "reconnected", 2)
    partition = await only_ready_partition(transport)
    inbox = await transport.open_inbox(partition, prefetch=10)
    assert isinstance(inbox, _rabbitmq_inbox.RabbitMQInbox)
    stale = await collect(inbox, 2)
    # Close the inbox's channel under it, as a network failure would: aio-pika
    # opens another and consumes again, and the broker delivers both again.
    await (await inbox._channel.get_underlay_channel()).close()
    again = await collect(inbox, 2)
    assert [(d.message.body, d.redelivered) for d in again] == [(body, True) for body in bodies]
    await inbox.ack([stale[0], again[1]])  # one by one, the first one's channel gone
    await inbox.ack([stale[1], again[0]])  # the oldest, one ack on the live channel
    await inbox.close()
    await nothing_more(await transport.open_inbox(partition, prefetch=10))


async def test_a_closed_inbox_whose_channel_still_consumes_closes_it_at_its_first_delivery(
    transport: RabbitMQTransport,
) -> None:
    """A consume that raced the inbox's close (a reconnect's) leaves a consumer that
    nobody reads: its first delivery closes the channel, which returns it."""
    inbox = await transport.open_inbox(0, prefetch=10)
    assert isinstance(inbox, _rabbitmq_inbox.RabbitMQInbox)
    channel = await underlay(inbox._channel)
    inbox.abandon()  # closed, its channel and consumer left open (as by the race)
    queue = transport.topology.partition_queue(0)
    await channel.basic_publish(b"after", routing_key=queue)
    await eventually(lambda: channel.is_closed)
    [delivery] = await collect(await transport.open_inbox(0, prefetch=10), 1)
    assert (delivery.message.body, delivery.redelivered) == (b"after", True)


async def test_a_delivery_arriving_while_the_inbox_closes_leaves_the_close_to_end_it(
    transport: RabbitMQTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deliveries the broker sent before it saw the close arrive while the close waits
    for its answer: that close ends the channel; none closes it a second time. (A second
    close fails the first now and then, aiormq rejecting its wait: the partition's stop
    failed with it, and the worker went on saying it served partitions it had left; the
    cuts test, session 21.)"""
    inbox = await transport.open_inbox(0, prefetch=10)
    assert isinstance(inbox, _rabbitmq_inbox.RabbitMQInbox)
    assert inbox._subscription is not None
    channel = await underlay(inbox._channel)
    await channel.basic_publish(b"early", routing_key=transport.topology.partition_queue(0))
    await collect(inbox, 1)
    [incoming] = inbox._unsettled.values()
    renewed: list[object] = []
    monkeypatch.setattr(inbox._subscription, "renew", renewed.append)
    close_channel = inbox._channel.close

    async def delivered_meanwhile(exc: object = None) -> None:
        closing = asyncio.ensure_future(close_channel())
        await asyncio.sleep(0)  # the close is sent; it waits for the broker's answer
        await inbox._on_delivery(incoming)
        await closing

    monkeypatch.setattr(inbox._channel, "close", delivered_meanwhile)
    await inbox.close()
    assert channel.is_closed
    assert renewed == []
    [again] = await collect(await transport.open_inbox(0, prefetch=10), 1)
    assert (again.message.body, again.redelivered) == (b"early", True)


async def test_an_inbox_whose_channel_closes_under_its_close_is_closed(
    transport: RabbitMQTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The close's wait failed (aiormq cancels it when the channel closes another way)
    but the channel closed: the close did what it was for, and says so."""
    inbox = await transport.open_inbox(0, prefetch=10)
    assert isinstance(inbox, _rabbitmq_inbox.RabbitMQInbox)
    channel = await underlay(inbox._channel)
    close_channel = inbox._channel.close

    async def closed_under(exc: object = None) -> None:
        await close_channel()
        raise asyncio.CancelledError  # as aiormq fails a close that another one ended

    monkeypatch.setattr(inbox._channel, "close", closed_under)
    await inbox.close()
    assert channel.is_closed


async def test_settlements_running_at_once_never_ack_another_s_delivery(
    transport: RabbitMQTransport,
) -> None:
    """A batch acknowledged one by one (not the oldest: a suspect run holds one between)
    while that run's own batch, now the oldest, goes in one ``multiple`` ack: the wide
    ack must not overtake the narrow one's later deliveries (the broker would refuse
    their acks, "unknown delivery tag", and close the channel; a requeue or dead-letter
    overtaken so would be acknowledged instead, a command lost). Seen in chaos runs."""
    await publish_commands(transport, "interleaved", 4)
    partition = await only_ready_partition(transport)
    inbox = await transport.open_inbox(partition, prefetch=10)
    first, run, third, run_later = await collect(inbox, 4)
    assert isinstance(inbox, _rabbitmq_inbox.RabbitMQInbox)
    channel = await inbox._channel.get_underlay_channel()
    # The partition's own batch, then the run's, at once (as a run's wind-up does).
    await asyncio.gather(inbox.ack([first, third]), inbox.ack([run, run_later]))
    await asyncio.sleep(0.3)  # an ack is not answered: the broker's refusal closes it
    assert not channel.is_closed  # else: PRECONDITION_FAILED - unknown delivery tag 3
    await inbox.close()
    await nothing_more(await transport.open_inbox(partition, prefetch=10))


async def test_a_consumer_the_broker_cancels_consumes_again(
    transport: RabbitMQTransport, broker: aio_pika.abc.AbstractChannel, rabbitmq_url: str
) -> None:
    inbox = await transport.open_inbox(0, prefetch=10)
    queue = transport.topology.partition_queue(0)
    await broker.queue_delete(queue)  # the broker cancels the inbox's consumer

    async def declared_again() -> bool:
        async with await aio_pika.connect(rabbitmq_url) as connection:
            channel = await connection.channel()
            try:
                await channel.declare_queue(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return False
            return True

    await eventually(declared_again)
    await broker.default_exchange.publish(aio_pika.Message(b"after"), routing_key=queue)
    [delivery] = await collect(inbox, 1)
    assert delivery.message.body == b"after"
    await inbox.ack([delivery])


async def test_a_command_no_partition_queue_takes_raises(
    transport: RabbitMQTransport,
    broker: aio_pika.abc.AbstractChannel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The ring unbound, and rebuilding it does not help (as if it failed to bind).
    topology = transport.topology
    ring = await broker.get_exchange(topology.ring_exchange, ensure=False)
    await ring.unbind(topology.commands_exchange, routing_key=str(MAX_PARTITIONS))

    async def unbound(_channel: object, _topology: Topology) -> None:
        return None

    monkeypatch.setattr(rabbitmq_transport, "build_ring", unbound)
    with pytest.raises(TransportError, match="no queue is bound"):
        await transport.publish_command(command("lost"))


async def test_a_command_published_after_the_ring_was_lost_rebuilds_it(
    transport: RabbitMQTransport, broker: aio_pika.abc.AbstractChannel
) -> None:
    # A broker restart drops the transient ring exchange, and its bindings with it.
    topology = transport.topology
    entities = [f"entity-{n}" for n in range(40)]
    before = await _landed(transport, broker, entities)
    assert len(set(before.values())) == PARTITIONS
    await broker.exchange_delete(topology.ring_exchange)
    assert await _landed(transport, broker, entities) == before


async def test_commands_returned_together_rebuild_the_ring_once_between_them(
    transport: RabbitMQTransport,
    broker: aio_pika.abc.AbstractChannel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topology = transport.topology
    entities = [f"entity-{n}" for n in range(40)]
    before = await _landed(transport, broker, entities)
    builds = []

    async def counted(channel: aio_pika.abc.AbstractChannel, topology: Topology) -> object:
        builds.append(topology)
        return await _rabbitmq_ring.build_ring(channel, topology)

    monkeypatch.setattr(rabbitmq_transport, "build_ring", counted)
    await broker.exchange_delete(topology.ring_exchange)
    sent = [Message(entity.encode(), routing_key=entity) for entity in entities]
    await asyncio.gather(*map(transport.publish_command, sent))
    assert 1 <= len(builds) < len(entities) / 4
    assert await _landed(transport, broker, []) == before


async def test_a_reply_waiting_for_a_dead_connection_s_write_queue_fails_not_hangs(
    transport: RabbitMQTransport,
) -> None:
    # The connection's short write queue full, and nobody draining it any more: what a
    # broker restart leaves behind a write that was waiting for room in it.
    replier = await underlay(transport._started().replier)
    assert isinstance(replier, aiormq.Channel)
    stuck: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
    stuck.put_nowait(object())
    replier.write_queue = stuck
    reply = asyncio.ensure_future(transport.publish_replies([Message(b"r", routing_key="x")]))
    await asyncio.sleep(0.2)
    assert not reply.done()
    await replier.connection.close()  # the connection dies (aio-pika reconnects)
    with pytest.raises(TransportError):
        await asyncio.wait_for(reply, 5)


async def _landed(
    transport: RabbitMQTransport, broker: aio_pika.abc.AbstractChannel, entities: list[str]
) -> dict[str, int]:
    """Publish a command to each of ``entities``; the partition each landed in."""
    for entity in entities:
        await transport.publish_command(Message(entity.encode(), routing_key=entity))
    landed: dict[str, int] = {}
    for partition in range(transport.topology.partitions):
        queue = await broker.get_queue(transport.topology.partition_queue(partition))
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            landed[message.body.decode()] = partition
    return landed


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
    monkeypatch.setattr(_rabbitmq_topology, "CONSISTENT_HASH", "x-pachyderm-test-missing")
    with pytest.raises(TransportError, match="rabbitmq-plugins enable rabbitmq_consistent_hash"):
        await open_transport()


async def test_an_unreachable_broker_is_unavailable(namespace: str) -> None:
    transport = RabbitMQTransport("amqp://guest:guest@127.0.0.1:1/", Topology(namespace))
    with pytest.raises(TransportUnavailableError, match="connecting"):
        await transport.start()


async def test_deleting_the_topology_removes_the_namespace(
    transport: RabbitMQTransport, rabbitmq_url: str
) -> None:
    async def ignore(message: Message) -> None:
        pass

    await transport.consume_effects("mailer", ["effect.mailer"], ignore)
    await transport.delete_topology()
    topology = transport.topology
    queues = [
        *map(topology.partition_queue, range(PARTITIONS)),
        topology.dead_letter_queue,
        topology.effects_queue("mailer"),
    ]
    exchanges = [
        topology.commands_exchange,
        topology.effects_exchange,
        topology.dead_letter_exchange,
    ]
    await assert_gone(rabbitmq_url, queues, exchanges)


async def test_deleting_a_grown_topology_leaves_no_growth_behind(
    transport: RabbitMQTransport, rabbitmq_url: str
) -> None:
    """Two growths (4 -> 8 -> 16) whose fences no worker answered: every queue and
    binding is in place. Deleting through a transport on the first count removes the
    added queues and both growth exchanges."""
    topology = transport.topology
    for old, new in ((PARTITIONS, 8), (8, 16)):
        with pytest.raises(RepartitionError, match="did not answer"):
            await grow_partitions(
                rabbitmq_url, replace(topology, partitions=old), new, grace=0, timeout=0.2
            )
    grown = replace(topology, partitions=16)
    async with await connect_to_broker(rabbitmq_url) as connection:
        found = await _rabbitmq_ring.layout(await connection.channel(), topology)
    assert found == _rabbitmq_ring.Layout(PARTITIONS, ((PARTITIONS, 8), (8, 16)))
    growths = [topology.growth_exchange(8), replace(topology, partitions=8).growth_exchange(16)]
    rings = [
        topology.ring_growth_exchange(8),
        replace(topology, partitions=8).ring_growth_exchange(16),
    ]
    await transport.delete_topology()
    exchanges = [*growths, *rings, topology.ring_exchange]
    await assert_gone(rabbitmq_url, map(grown.partition_queue, range(16)), exchanges)


async def test_deleting_removes_the_queues_of_a_growth_stopped_before_its_record(
    transport: RabbitMQTransport, rabbitmq_url: str
) -> None:
    """A growth declares its queues first: stopped there, the namespace's layout says
    the old count, and its queues are deleted all the same."""
    grown = replace(transport.topology, partitions=8)
    async with await connect_to_broker(rabbitmq_url) as connection:
        channel = await connection.channel()
        for partition in range(PARTITIONS, 8):
            await declare_partition_queue(channel, partition, grown)
    await transport.delete_topology()
    await assert_gone(rabbitmq_url, map(grown.partition_queue, range(8)), [])


async def assert_gone(url: str, queues: Iterable[str], exchanges: Iterable[str]) -> None:
    async with await aio_pika.connect(url) as connection:
        for queue in queues:
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await (await connection.channel()).declare_queue(queue, passive=True)
        for exchange in exchanges:
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await (await connection.channel()).declare_exchange(exchange, passive=True)


async def test_racing_starts_share_one_connection(
    open_transport: TransportFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = await open_transport()
    await transport.close()
    connected: list[aio_pika.RobustConnection] = []

    async def counted(*args: Any, **kwargs: Any) -> aio_pika.RobustConnection:
        connected.append(await connect_to_broker(*args, **kwargs))
        return connected[-1]

    monkeypatch.setattr(rabbitmq_transport, "connect_to_broker", counted)
    await asyncio.gather(transport.start(), transport.start())
    assert len(connected) == 1


async def test_a_connection_made_again_is_counted(
    transport: RabbitMQTransport, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker opens its partitions again once its connection was made again (its
    channels were restored, not opened anew: pachyderm.worker._reachability)."""
    assert transport.reconnects == 0
    monkeypatch.setenv("PACHYDERM_AMQP_URL", rabbitmq_url)
    assert cut_broker_sockets() >= 1  # this process's sockets to the broker
    for _ in range(300):  # 30 s: aio-pika tries again after 5 s
        if transport.reconnects:
            break
        await asyncio.sleep(0.1)
    assert transport.reconnects == 1
