"""Confirmed publishes written together: each still gets its own confirm, nack or return."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import pytest

from pachyderm import OverloadedError, TransportError
from pachyderm.transport import Message, RabbitMQTransport, _amqp

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def queue(
    transport: RabbitMQTransport, rabbitmq_url: str, namespace: str
) -> AsyncIterator[tuple[str, aio_pika.abc.AbstractChannel]]:
    """A queue of the test's own that takes 5 messages and refuses more, bound to
    ``amq.direct`` by its name, and a channel to look at it."""
    name = f"{namespace}.batches"
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel()
        arguments: dict[str, Any] = {"x-max-length": 5, "x-overflow": "reject-publish"}
        declared = await channel.declare_queue(name, arguments=arguments)
        await declared.bind("amq.direct", routing_key=name)
        yield name, channel
        await channel.queue_delete(name)


def publish(transport: RabbitMQTransport, key: str, n: int) -> asyncio.Task[None]:
    message = Message(f"{n}".encode(), routing_key=key, message_id=f"m-{n}")
    channel = transport._started().publisher
    return asyncio.ensure_future(_amqp.publish(channel, "amq.direct", message, "publishing"))


async def ready(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    declared = await channel.declare_queue(name, passive=True)
    return declared.declaration_result.message_count or 0


async def test_publishes_asked_for_together_go_in_one_write_each_confirmed(
    transport: RabbitMQTransport,
    queue: tuple[str, aio_pika.abc.AbstractChannel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, channel = queue
    underlay = await _amqp.underlay(transport._started().publisher)
    assert isinstance(underlay, aiormq.Channel)
    writes: list[object] = []
    put_nowait = underlay.write_queue.put_nowait

    def counted(frame: object) -> None:
        writes.append(frame)
        put_nowait(frame)

    # (put() calls put_nowait() too, once there is room)
    monkeypatch.setattr(underlay.write_queue, "put_nowait", counted)
    await asyncio.gather(*(publish(transport, name, n) for n in range(5)))
    assert len(writes) == 1
    assert await ready(channel, name) == 5


async def test_a_nack_reaches_its_own_publisher_only(
    transport: RabbitMQTransport, queue: tuple[str, aio_pika.abc.AbstractChannel]
) -> None:
    name, channel = queue
    outcomes = await asyncio.gather(
        *(publish(transport, name, n) for n in range(8)), return_exceptions=True
    )
    # The queue took the first five, in the order asked for, and refused the rest.
    assert outcomes[:5] == [None] * 5
    assert all(isinstance(outcome, OverloadedError) for outcome in outcomes[5:])
    assert await ready(channel, name) == 5


async def test_a_returned_message_fails_its_own_publisher_only(
    transport: RabbitMQTransport, queue: tuple[str, aio_pika.abc.AbstractChannel]
) -> None:
    name, channel = queue
    nowhere = f"{name}.unbound"
    outcomes = await asyncio.gather(
        publish(transport, name, 1),
        publish(transport, nowhere, 2),
        publish(transport, name, 3),
        return_exceptions=True,
    )
    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], TransportError)
    assert "no queue is bound" in str(outcomes[1])
    assert await ready(channel, name) == 2


async def test_a_publish_cancelled_before_its_write_is_not_sent(
    transport: RabbitMQTransport, queue: tuple[str, aio_pika.abc.AbstractChannel]
) -> None:
    name, channel = queue
    kept, dropped = publish(transport, name, 1), publish(transport, name, 2)
    await asyncio.sleep(0)  # both are waiting for the write
    dropped.cancel()
    await kept
    with pytest.raises(asyncio.CancelledError):
        await dropped
    await publish(transport, name, 3)
    assert await ready(channel, name) == 2
    got = await channel.get_queue(name)
    bodies = [(await got.get(no_ack=True)).body for _ in range(2)]
    assert bodies == [b"1", b"3"]


async def test_publishes_waiting_for_a_dead_connection_s_write_queue_fail_not_hang(
    transport: RabbitMQTransport,
) -> None:
    # The connection's short write queue full, and nobody draining it any more: what a
    # broker restart leaves behind a write that was waiting for room in it.
    publisher = await _amqp.underlay(transport._started().publisher)
    assert isinstance(publisher, aiormq.Channel)
    stuck: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
    stuck.put_nowait(object())
    publisher.write_queue = stuck
    publishes = [publish(transport, "anywhere", n) for n in range(3)]
    await asyncio.sleep(0.2)
    assert not any(p.done() for p in publishes)
    await publisher.connection.close()  # the connection dies (aio-pika reconnects)
    outcomes = await asyncio.wait_for(asyncio.gather(*publishes, return_exceptions=True), 5)
    assert all(isinstance(outcome, TransportError) for outcome in outcomes), outcomes
