"""Fixtures of the chaos suite: where its fleets run, and private services to restart.

Scenarios that only break workers and connections run on the suite's usual
PostgreSQL and RabbitMQ (each in a namespace of its own). Restarting a
service needs one of the run's own: a private PostgreSQL or RabbitMQ on
loopback, started once per session. If this machine cannot start one, those
tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from chaos.run import Services
from chaos.services import PrivateServices, ServiceUnavailableError


def _start_private(*, postgres: bool, rabbitmq: bool) -> PrivateServices:
    try:
        return PrivateServices(postgres=postgres, rabbitmq=rabbitmq)
    except ServiceUnavailableError as error:
        message = f"cannot start a private instance to restart: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def shared_services(postgres_dsn: str, rabbitmq_url: str) -> Services:
    """The suite's PostgreSQL and RabbitMQ: never restarted, only our own connections cut."""
    return Services(postgres_dsn, rabbitmq_url)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivateServices]:
    services = _start_private(postgres=True, rabbitmq=False)
    try:
        yield services
    finally:
        services.close()


@pytest.fixture(scope="session")
def private_rabbitmq() -> Iterator[PrivateServices]:
    services = _start_private(postgres=False, rabbitmq=True)
    try:
        yield services
    finally:
        services.close()
