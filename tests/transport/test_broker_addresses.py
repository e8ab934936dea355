"""Several broker addresses: the setting's list, a first connection to a node that
answers, and reconnect attempts that go round the list."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from yarl import URL

from pachyderm import TransportError
from pachyderm.transport._broker_addresses import (
    BrokerConnection,
    broker_addresses,
    connect_to_broker,
)


def test_one_address_or_several_separated_by_commas() -> None:
    assert broker_addresses("amqp://a/") == ("amqp://a/",)
    assert broker_addresses(" amqp://a/ , amqps://b:5671/v ") == ("amqp://a/", "amqps://b:5671/v")
    # A comma inside a query is not a separator: only one before a scheme is.
    assert broker_addresses("amqp://a/?x=1,2,amqp://b/") == ("amqp://a/?x=1,2", "amqp://b/")
    with pytest.raises(TransportError, match="no RabbitMQ address"):
        broker_addresses(" ")


def _dead_address(live: str) -> str:
    """The live URL with a loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return str(URL(live).with_host("127.0.0.1").with_port(port))


@pytest.mark.rabbitmq
async def test_connects_to_the_node_that_answers(rabbitmq_url: str) -> None:
    dead = _dead_address(rabbitmq_url)
    # The first address tried is random: enough tries to start from each.
    for _ in range(6):
        connection = await connect_to_broker(f"{dead},{rabbitmq_url}")
        try:
            assert connection.url == URL(rabbitmq_url)
        finally:
            await connection.close()


@pytest.mark.rabbitmq
async def test_no_node_answering_raises_the_last_error(rabbitmq_url: str) -> None:
    with pytest.raises(ConnectionError, match="Connect call failed"):
        await connect_to_broker(f"{_dead_address(rabbitmq_url)},{_dead_address(rabbitmq_url)}")


@pytest.mark.rabbitmq
async def test_after_a_loss_each_attempt_goes_to_the_next_address(
    rabbitmq_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead = _dead_address(rabbitmq_url)
    live = str(URL(rabbitmq_url).update_query(reconnect_interval="0.1"))
    connection = BrokerConnection([live, dead], 0)
    await connection.connect()
    reconnected = asyncio.Event()
    connection.reconnect_callbacks.add(lambda _connection: reconnected.set())
    try:
        assert connection.url == URL(live)
        caplog.set_level(logging.WARNING, logger="aio_pika")
        assert connection.transport is not None
        await connection.transport.connection.close()  # as a node going away would
        await asyncio.wait_for(reconnected.wait(), 20)
        # The dead address was tried first, then the live one again.
        assert f":{URL(dead).port}" in caplog.text
        assert connection.url == URL(live)
    finally:
        await connection.close()
