"""A broker connection that is gone is an outage (TransportUnavailableError), whatever
part of aio-pika or aiormq notices it first: callers retry outages and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pachyderm import TransportUnavailableError
from pachyderm.transport import RabbitMQTransport, Topology
from pachyderm.transport._amqp import translated_errors

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def transport(rabbitmq_url: str, namespace: str) -> AsyncIterator[RabbitMQTransport]:
    transport = RabbitMQTransport(rabbitmq_url, Topology(namespace, 2))
    await transport.start()
    yield transport
    await transport.delete_topology()


async def test_a_pass_over_waiting_effects_on_a_lost_connection_is_an_outage(
    transport: RabbitMQTransport,
) -> None:
    # What a dispatcher's pass meets while the broker restarts: the connection is
    # gone, and aio-pika answers a new channel with a plain RuntimeError.
    session = transport._started()
    await session.connection.close()
    with pytest.raises(TransportUnavailableError, match="RabbitMQ is unavailable"):
        await transport.route_waiting_effects()
    with pytest.raises(TransportUnavailableError):
        await transport.queue_depths()


async def test_other_runtime_errors_are_not_taken_for_an_outage() -> None:
    with pytest.raises(RuntimeError, match="a bug"):
        async with translated_errors("doing something"):
            raise RuntimeError("a bug")
