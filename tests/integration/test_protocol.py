"""docs/protocol.md, followed by a client that uses nothing of Pachyderm's:
plain aio-pika, JSON bodies and a uuid5 computed by hand from the document.
Only the worker under test is ours."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from .harness import Fleet, fleet

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

# From docs/protocol.md, "Natural keys".
KEY_NAMESPACE = uuid.UUID("6b1f3f0e-5d0c-4b8e-9a55-2f6b4c6f7a10")


def natural_id(entity_type: str, key: str) -> str:
    return str(uuid.uuid5(KEY_NAMESPACE, f"{entity_type}:{key}"))


@pytest.fixture
async def running(
    tmp_path: Path, namespace: str, postgres_dsn: str, rabbitmq_url: str
) -> AsyncIterator[Fleet]:
    async with fleet(tmp_path, namespace, postgres_dsn, rabbitmq_url, partitions=4) as started:
        started.start_worker("w1")
        await started.balanced()
        yield started


class RawCaller:
    """An AMQP caller written from the protocol document alone."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel, namespace: str) -> None:
        self.channel = channel
        self.namespace = namespace
        self.replies: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

    async def start(self) -> None:
        self.queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await self.queue.consume(self.replies.put, no_ack=True)
        self.exchange = await self.channel.get_exchange(f"{self.namespace}.commands")

    async def call(self, entity_id: str, **fields: Any) -> tuple[dict[str, Any], Any]:
        await self.send(entity_id, "corr-1", **fields)
        return (await self.collect(1))["corr-1"]

    async def send(self, entity_id: str, correlation_id: str, **fields: Any) -> None:
        message = aio_pika.Message(
            body=fields.pop("body", b"") or json.dumps(fields.pop("data", {})).encode(),
            message_id=fields.pop("message_id", str(uuid.uuid4())),
            correlation_id=correlation_id,
            reply_to=self.queue.name,
            content_type=fields.pop("content_type", "application/json"),
            type=fields.pop("type", None),
            headers=fields.pop("headers", {}),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self.exchange.publish(message, routing_key=entity_id, mandatory=True)

    async def collect(self, count: int) -> dict[str, tuple[dict[str, Any], Any]]:
        """The next ``count`` replies, by correlation id: body and status header."""
        replies = {}
        for _ in range(count):
            reply = await asyncio.wait_for(self.replies.get(), 10)
            assert reply.content_type == "application/json"
            body = json.loads(reply.body), reply.headers.get("pachyderm-status")
            replies[str(reply.correlation_id)] = body
        return replies


@pytest.fixture
async def caller(running: Fleet, rabbitmq_url: str) -> AsyncIterator[RawCaller]:
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        raw = RawCaller(channel, running.topology.namespace)
        await raw.start()
        yield raw


ACCOUNT: dict[str, aio_pika.abc.FieldValue] = {"pachyderm-entity-type": "account"}


async def test_a_command_and_its_reply_as_the_document_says(caller: RawCaller) -> None:
    alice = natural_id("account", "alice")
    body, status = await caller.call(alice, type="Open", headers=ACCOUNT, data={"owner": "A"})
    assert (body, status) == (
        {"status": "ok", "version": 1, "reply": {"owner": "A", "balance": 0}},
        "ok",
    )
    body, _ = await caller.call(alice, type="Withdraw", headers=ACCOUNT, data={"amount": 5})
    assert body == {"status": "rejected", "reason": "insufficient_funds", "detail": {"balance": 0}}
    query = {**ACCOUNT, "pachyderm-kind": "query"}
    body, _ = await caller.call(alice, headers=query, message_id="")
    assert body == {"status": "ok", "version": 1, "reply": {"owner": "A", "balance": 0}}


async def test_a_repeated_message_id_gets_the_first_reply(caller: RawCaller) -> None:
    bob = natural_id("account", "bob")
    await caller.call(bob, type="Open", headers=ACCOUNT, data={"owner": "B"})
    first, _ = await caller.call(
        bob, type="Deposit", headers=ACCOUNT, data={"amount": 7}, message_id="deposit-1"
    )
    again, _ = await caller.call(
        bob, type="Deposit", headers=ACCOUNT, data={"amount": 7}, message_id="deposit-1"
    )
    assert first == again == {"status": "ok", "version": 2, "reply": {"owner": "B", "balance": 7}}


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"type": "Deposit", "data": {"amount": "lots"}}, "InvalidMessageError"),
        ({"type": "Fly", "data": {}}, "UnknownNameError"),
        ({"type": "Open", "body": b"\xff\xfe not json"}, "DecodeError"),
        ({"type": "Open", "data": {}, "headers": {}}, "InvalidInputError"),
        ({"type": "Open", "data": {}, "entity_id": "eve"}, "InvalidEntityIdError"),
    ],
)
async def test_invalid_commands_get_an_invalid_reply(
    caller: RawCaller, fields: dict[str, Any], error: str
) -> None:
    entity_id = fields.pop("entity_id", natural_id("account", "eve"))
    body, status = await caller.call(entity_id, **{"headers": ACCOUNT, **fields})
    assert (status, body["status"], body.get("error")) == ("invalid", "invalid", error), body
    assert body["message"]


@pytest.mark.parametrize(
    "spell", [str.upper, lambda text: text.replace("-", "")], ids=["upper-case", "no-hyphens"]
)
async def test_an_id_not_in_canonical_form_is_invalid_and_applies_nothing(
    running: Fleet, caller: RawCaller, spell: Any
) -> None:
    # The exchange hashes the text: another spelling is another partition, where
    # a second worker would serve the same entity at the same time.
    dave = natural_id("account", "dave")
    await caller.call(dave, type="Open", headers=ACCOUNT, data={"owner": "D"})
    body, status = await caller.call(
        spell(dave), type="Deposit", headers=ACCOUNT, data={"amount": 5}
    )
    assert (status, body["status"], body.get("error")) == (
        "invalid",
        "invalid",
        "InvalidEntityIdError",
    ), body
    assert "canonical form (lower case, hyphenated" in body["message"]
    assert repr(spell(dave)) in body["message"]
    query = {**ACCOUNT, "pachyderm-kind": "query"}
    body, _ = await caller.call(dave, headers=query, message_id="")
    assert body == {"status": "ok", "version": 1, "reply": {"owner": "D", "balance": 0}}


async def test_an_id_addressed_as_another_type_is_invalid_and_the_rest_apply(
    running: Fleet, caller: RawCaller
) -> None:
    erin = natural_id("account", "erin")
    await caller.call(erin, type="Open", headers=ACCOUNT, data={"owner": "E"})
    as_counter: dict[str, aio_pika.abc.FieldValue] = {"pachyderm-entity-type": "counter"}
    sends = [
        ("deposit", erin, "Deposit", ACCOUNT, {"amount": 3}),
        ("mismatch", erin, "Increment", as_counter, {"amount": 1}),
        ("count", natural_id("counter", "hits"), "Increment", as_counter, {"amount": 2}),
        ("again", erin, "Deposit", ACCOUNT, {"amount": 4}),
    ]
    await asyncio.gather(
        *(
            caller.send(entity_id, name, type=command, headers=headers, data=data)
            for name, entity_id, command, headers, data in sends
        )
    )
    replies = await caller.collect(len(sends))
    body, status = replies["mismatch"]
    assert (status, body["status"], body.get("error")) == (
        "invalid",
        "invalid",
        "EntityTypeMismatchError",
    ), body
    assert "is a 'account', not a 'counter'" in body["message"]
    assert "internal error" not in body["message"]
    assert replies["count"][0] == {"status": "ok", "version": 1, "reply": {"count": 2}}
    deposits = sorted(
        (replies[name][0]["version"], replies[name][1]) for name in ("deposit", "again")
    )
    assert deposits == [(2, "ok"), (3, "ok")]
    query = {**ACCOUNT, "pachyderm-kind": "query"}
    body, _ = await caller.call(erin, headers=query, message_id="")
    assert body == {"status": "ok", "version": 3, "reply": {"owner": "E", "balance": 7}}
    log = running.workers[0].log.read_text(errors="replace")
    assert "Traceback" not in log
    assert "EntityTypeMismatchError" not in log


async def test_an_unanswerable_command_is_dead_lettered(
    running: Fleet, caller: RawCaller, rabbitmq_url: str
) -> None:
    await caller.exchange.publish(
        aio_pika.Message(
            b"{broken",
            message_id="x1",
            content_type="application/json",
            type="Open",
            headers=ACCOUNT,
        ),
        routing_key=natural_id("account", "mallory"),
    )
    dead_letters = await caller.channel.get_queue(f"{running.topology.namespace}.dead-letter")
    for _ in range(100):
        message = await dead_letters.get(no_ack=True, fail=False)
        if message is not None:
            assert message.message_id == "x1"
            assert message.headers.get("x-death")
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the broken command never reached the dead-letter queue")
