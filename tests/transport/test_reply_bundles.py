"""Reply bundles: what goes together, what comes out, and what a hostile bundle does."""

from __future__ import annotations

import asyncio
import logging

import aio_pika
import pytest

from pachyderm import DecodeError, _codec
from pachyderm.testing._transport_contract import eventually, listening
from pachyderm.transport import Message, RabbitMQTransport
from pachyderm.transport._reply_bundles import (
    BUNDLE,
    MAX_BUNDLE_BYTES,
    bundled,
    bundling_address,
    unbundled,
)

NS = "ns"
TO = bundling_address(NS, "caller")


def reply(n: int, to: str = TO, size: int = 3, **fields: str) -> Message:
    return Message(
        bytes([n % 256]) * size,
        routing_key=to,
        correlation_id=f"c-{n}",
        content_type=_codec.MSGPACK,
        headers={"pachyderm-status": "ok"},
        **fields,
    )


def round_trip(messages: list[Message]) -> list[Message]:
    return [out for sent in bundled(NS, messages) for out in unbundled(sent)]


def test_replies_to_one_caller_go_as_one_message_and_come_out_as_they_were() -> None:
    sent = [reply(n) for n in range(5)]
    [bundle] = bundled(NS, sent)
    assert (bundle.routing_key, bundle.content_type) == (TO, BUNDLE)
    assert round_trip(sent) == sent


def test_one_reply_and_replies_to_other_addresses_go_as_they_are() -> None:
    plain = bundling_address("other_ns", "x")  # another namespace's: not this worker's to bundle
    sent = [reply(1), reply(2, to="amq.rabbitmq.reply-to"), reply(3, to=plain), reply(4, to=plain)]
    assert bundled(NS, sent) == [sent[1], sent[2], sent[3], sent[0]]


def test_each_caller_gets_its_own_bundle() -> None:
    other = bundling_address(NS, "other")
    sent = [reply(1), reply(2, to=other), reply(3), reply(4, to=other)]
    out = bundled(NS, sent)
    assert [m.routing_key for m in out] == [TO, other]
    assert [m.correlation_id for m in round_trip(sent)] == ["c-1", "c-3", "c-2", "c-4"]


def test_a_reply_with_other_properties_goes_alone_in_its_place() -> None:
    odd = reply(3, message_id="m-3")
    sent = [reply(1), reply(2), odd, reply(4), reply(5)]
    out = bundled(NS, sent)
    assert [m.content_type for m in out] == [BUNDLE, _codec.MSGPACK, BUNDLE]
    assert round_trip(sent) == sent


def test_no_bundle_grows_past_its_bound_and_a_large_reply_goes_alone() -> None:
    half = MAX_BUNDLE_BYTES // 2
    sent = [
        reply(1, size=half + 1),
        reply(2, size=half),
        reply(3),
        reply(4, size=MAX_BUNDLE_BYTES + 1),
    ]
    out = bundled(NS, sent)
    assert [m.content_type for m in out] == [_codec.MSGPACK, BUNDLE, _codec.MSGPACK]
    assert all(len(m.body) <= MAX_BUNDLE_BYTES + 64 for m in out[:2])
    assert round_trip(sent) == sent


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # not msgpack
        _codec.encode({"c-1": b"x"}),
        _codec.encode([["c-1", None, {}, "text, not bytes"]]),
        _codec.encode([["c-1", None, {}]]),
        _codec.encode([["c-1", None, [], b"x"]]),
        _codec.encode([[1, None, {}, b"x"]]),
    ],
)
def test_a_bundle_that_is_not_one_is_refused_whole(body: bytes) -> None:
    with pytest.raises(DecodeError):
        unbundled(Message(body, routing_key=TO, content_type=BUNDLE))


# -- on RabbitMQ ----------------------------------------------------------------------


async def test_a_listener_reads_the_bundles_a_transport_sends_it(
    transport: RabbitMQTransport, rabbitmq_url: str, namespace: str
) -> None:
    address, received = await listening(transport)
    assert address.startswith(bundling_address(namespace, ""))
    sent = [reply(n, to=address) for n in range(20)]
    await transport.publish_replies(sent)
    await eventually(lambda: len(received) == len(sent))
    assert received == sent


async def test_a_transport_sends_one_message_for_the_replies_of_one_caller(
    transport: RabbitMQTransport, rabbitmq_url: str, namespace: str
) -> None:
    address = bundling_address(namespace, "watched")
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel()
        await channel.declare_queue(address, exclusive=True)
        await transport.publish_replies([reply(n, to=address) for n in range(10)])
        await asyncio.sleep(0.3)  # written by now; given time to be routed
        declared = await channel.declare_queue(address, passive=True)
        assert declared.declaration_result.message_count == 1


async def test_a_hostile_bundle_is_logged_and_the_listener_reads_on(
    transport: RabbitMQTransport,
    rabbitmq_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    address, received = await listening(transport)
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel()
        bogus = aio_pika.Message(b"\xc1", content_type=BUNDLE, correlation_id="bogus")
        await channel.default_exchange.publish(bogus, routing_key=address)
    await transport.publish_replies([reply(1, to=address), reply(2, to=address)])
    await eventually(lambda: len(received) == 2)
    assert [m.correlation_id for m in received] == ["c-1", "c-2"]
    assert "reply handler failed on the reply to bogus" in caplog.text
    assert logging.ERROR in {record.levelno for record in caplog.records}
