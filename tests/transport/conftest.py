"""What the transport tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pachyderm.transport import RabbitMQTransport, Topology


@pytest.fixture
async def transport(rabbitmq_url: str, namespace: str) -> AsyncIterator[RabbitMQTransport]:
    """A started transport on the test's namespace of 2 partitions, deleted afterwards
    (test_rabbitmq.py has its own, for the contract suite)."""
    transport = RabbitMQTransport(rabbitmq_url, Topology(namespace, 2))
    await transport.start()
    yield transport
    await transport.delete_topology()
