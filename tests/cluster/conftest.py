"""A private three-node RabbitMQ cluster per test module (starting one takes half a
minute): its own node names, ports (AMQP 5761-5763), data folders and cookie, never the
machine's broker. If this machine cannot start one, the tests skip, except in CI
(CI=true), where they fail."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from chaos.rabbitmq_cluster import RabbitMQCluster
from chaos.services import ServiceUnavailableError


@pytest.fixture(scope="module")
def rabbitmq_cluster() -> Iterator[RabbitMQCluster]:
    try:
        cluster = RabbitMQCluster()
        cluster.start()
    except ServiceUnavailableError as error:
        message = f"cannot start a private RabbitMQ cluster: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield cluster
    finally:
        cluster.close()
