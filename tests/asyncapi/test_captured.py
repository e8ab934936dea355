"""Replies and an effect captured from the wire of a real fleet (a worker process on
RabbitMQ and PostgreSQL) are the document's messages.

A plain AMQP client publishes commands built by the product's own code, and
takes what the worker sends back to its reply queue and to the effects
exchange, as any consumer written from the document would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aio_pika
import pytest

from examples import bank, counter
from examples.demo import APP
from pachyderm import _codec as codec
from pachyderm import _wire as wire
from pachyderm._expiry import SENT_AT_HEADER, now_ms
from pachyderm.transport import Message

from ..integration.harness import Fleet, fleet
from .document import Json, content_type, document, mismatches

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

Incoming = aio_pika.abc.AbstractIncomingMessage
COUNTER, NOBODY = counter.Counter.ref("captured"), bank.account("never-opened")


def _sent_days_ago(message: Message, days: int) -> Message:
    sent_at = now_ms() - days * 24 * 3600 * 1000
    return replace(message, headers={**message.headers, SENT_AT_HEADER: sent_at})


# correlation id -> (the command, the status its reply must have)
SENT: dict[str, tuple[Message, str]] = {
    # Crossing 10: the counter also tells the admin (an effect).
    "ok": (wire.command_message(APP, COUNTER, counter.Increment(amount=11)), "ok"),
    "rejected": (wire.command_message(APP, NOBODY, bank.Deposit(amount=1)), "rejected"),
    "invalid": (wire.named_message(NOBODY, "Steal", {"amount": 1}), "invalid"),
    # Sent 8 days ago: past the command window (7 days by default).
    "expired": (
        _sent_days_ago(wire.command_message(APP, NOBODY, bank.Deposit(amount=1)), 8),
        "expired",
    ),
}
JSON_COMMAND = Message(
    json.dumps({"amount": 1}).encode(),
    str(COUNTER.id),
    "json-command",
    content_type=codec.JSON,
    type="Increment",
    headers={"pachyderm-entity-type": "counter", "pachyderm-kind": "command"},
)


@pytest.fixture
async def running(
    tmp_path: Path, namespace: str, postgres_dsn: str, rabbitmq_url: str
) -> AsyncIterator[Fleet]:
    async with fleet(tmp_path, namespace, postgres_dsn, rabbitmq_url, partitions=2) as started:
        started.start_worker("w1")
        await started.balanced()
        yield started


async def _listen(queue: aio_pika.abc.AbstractQueue) -> asyncio.Queue[Incoming]:
    seen: asyncio.Queue[Incoming] = asyncio.Queue()
    await queue.consume(seen.put, no_ack=True)
    return seen


async def _publish(
    exchange: aio_pika.abc.AbstractExchange, message: Message, correlation_id: str, reply_to: str
) -> None:
    await exchange.publish(
        aio_pika.Message(
            message.body,
            message_id=message.message_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            content_type=message.content_type,
            type=message.type,
            headers=dict(message.headers),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=message.routing_key,
        mandatory=True,
    )


def _problems(spec: Json, name: str, captured: Incoming) -> list[str]:
    return mismatches(
        spec,
        name,
        body=captured.body,
        content_type=captured.content_type,
        headers=dict(captured.headers),
    )


async def test_replies_and_an_effect_from_a_real_fleet_are_the_document_s(
    running: Fleet, rabbitmq_url: str
) -> None:
    spec = document()
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        reply_queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        effect_queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await effect_queue.bind(running.topology.effects_exchange, routing_key="effect.#")
        replies, effects = await _listen(reply_queue), await _listen(effect_queue)
        exchange = await channel.get_exchange(running.topology.commands_exchange)
        for correlation_id, (message, _) in SENT.items():
            await _publish(exchange, message, correlation_id, reply_queue.name)
        await _publish(exchange, JSON_COMMAND, "json", reply_queue.name)

        captured = [await asyncio.wait_for(replies.get(), 10) for _ in range(len(SENT) + 1)]
        effect = await asyncio.wait_for(effects.get(), 10)

    by_id = {str(reply.correlation_id): reply for reply in captured}
    assert set(by_id) == {*SENT, "json"}
    for correlation_id, (_, status) in SENT.items():
        reply = by_id[correlation_id]
        assert reply.content_type == content_type(spec, "Reply")
        assert _problems(spec, "Reply", reply) == []
        assert codec.decode(reply.body)["status"] == status
    # A JSON command is answered in JSON, as the document says.
    assert by_id["json"].content_type == codec.JSON
    assert _problems(spec, "Reply", by_id["json"]) == []

    assert effect.content_type == content_type(spec, "Effect")
    assert _problems(spec, "Effect", effect) == []
    assert effect.routing_key == "effect.admin_mailer"
    assert effect.type == "admin_mailer"
    assert effect.message_id == effect.headers["pachyderm-effect-id"]
    assert effect.headers["pachyderm-source-command-id"] == SENT["ok"][0].message_id
