"""Events the event relay publishes, taken off the broker by a plain AMQP client bound to
``<ns>.events``, are the document's Event messages on its events channel.

The bank's events are committed to a real PostgreSQL log and relayed by
:class:`~pachyderm.EventRelay` over real RabbitMQ.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from examples import bank
from pachyderm import App, EventRelay
from pachyderm.projections import PostgresCursors, ProjectionRunner
from pachyderm.store import Change, PostgresEventStore
from pachyderm.transport import Topology
from pachyderm.transport._rabbitmq_topology import declare_events_exchange

from .document import Json, content_type, document, mismatches

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

Incoming = aio_pika.abc.AbstractIncomingMessage
ALICE, BOB = bank.account("relayed-alice"), bank.account("relayed-bob")
HISTORIES: list[tuple[Any, list[Any]]] = [
    (ALICE, [bank.Opened(owner="Alice"), bank.Deposited(amount=30)]),
    (BOB, [bank.Opened(owner="Bob"), bank.TransferReceived(source=ALICE.id, amount=5)]),
    (ALICE, [bank.TransferSent(to=BOB.id, amount=5)]),
]


@pytest.fixture
async def store(postgres_dsn: str, namespace: str) -> AsyncIterator[PostgresEventStore]:
    opened = await PostgresEventStore.connect(postgres_dsn, schema=namespace)
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.drop_namespace()
        await opened.close()


@pytest.fixture
async def relayed(
    store: PostgresEventStore, postgres_dsn: str, namespace: str, rabbitmq_url: str
) -> AsyncIterator[list[Incoming]]:
    """Commit the bank's histories, relay them (one runner step per partition) and return
    what a subscriber bound with ``#`` received."""
    relay = EventRelay(amqp_url=rabbitmq_url, namespace=namespace)
    app = App([bank.Account], projections=[relay])
    account = app.entity_type("account")
    versions: dict[uuid.UUID, int] = {}
    for ref, events in HISTORIES:
        version = versions.get(ref.id, 0)
        encoded = [account.encode_event(event) for event in events]
        await store.commit([Change(ref, version, uuid.uuid4().hex, encoded, partition=0)])
        versions[ref.id] = version + len(events)
    topology = Topology(namespace)
    received: asyncio.Queue[Incoming] = asyncio.Queue()
    cursors = await PostgresCursors.connect(postgres_dsn, schema=namespace)
    async with await aio_pika.connect(rabbitmq_url) as connection:
        try:
            channel = await connection.channel()
            await declare_events_exchange(channel, topology)
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(topology.events_exchange, routing_key="#")
            await queue.consume(received.put, no_ack=True)
            await cursors.ensure(relay.name, 1)
            await ProjectionRunner(app, store, cursors, relay, 0).step()
            yield [await asyncio.wait_for(received.get(), 10) for _ in range(5)]
        finally:
            await relay.close()
            await cursors.close()
            await channel.exchange_delete(topology.events_exchange)


def event_problems(spec: Json, message: Incoming) -> list[str]:
    """How a received message differs from the document's Event message."""
    return mismatches(
        spec,
        "Event",
        body=message.body,
        content_type=message.content_type,
        headers=dict(message.headers),
    )


def test_the_document_names_the_events_exchange_as_the_topology_does() -> None:
    spec = document()
    exchange = spec["channels"]["pachyderm.events"]["bindings"]["amqp"]["exchange"]
    assert exchange["name"] == Topology("pachyderm").events_exchange
    assert exchange["type"] == "topic"


async def test_relayed_events_are_the_document_s_event_messages(relayed: list[Incoming]) -> None:
    spec: Json = document()
    assert [m.type for m in relayed] == [
        "Opened",
        "Deposited",
        "Opened",
        "TransferReceived",
        "TransferSent",
    ]
    for message in relayed:
        assert message.content_type == content_type(spec, "Event")
        assert message.routing_key == f"account.{message.type}"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert uuid.UUID(str(message.message_id))
        assert event_problems(spec, message) == []


async def test_a_header_the_document_lacks_is_a_mismatch(relayed: list[Incoming]) -> None:
    spec: Json = document()
    del spec["components"]["messages"]["Event"]["headers"]["properties"]["pachyderm-position"]
    message = relayed[0]
    assert event_problems(spec, message) == [
        "Event headers not in the document: ['pachyderm-position']"
    ]
