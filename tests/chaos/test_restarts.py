"""PostgreSQL and RabbitMQ restarted under load: private instances of the test's own,
never the machine's shared services."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.run import Services
from chaos.services import PrivateServices

from .scenario import assert_survives

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.rabbitmq]


async def test_postgresql_crashes_and_comes_back(
    tmp_path: Path, private_postgres: PrivateServices, rabbitmq_url: str
) -> None:
    assert private_postgres.postgres is not None
    services = Services(private_postgres.postgres.dsn, rabbitmq_url, private_postgres)
    await assert_survives(tmp_path, services, ["postgres_restarted"])


async def test_rabbitmq_restarts(
    tmp_path: Path, private_rabbitmq: PrivateServices, postgres_dsn: str
) -> None:
    assert private_rabbitmq.rabbitmq is not None
    services = Services(postgres_dsn, private_rabbitmq.rabbitmq.url, private_rabbitmq)
    await assert_survives(tmp_path, services, ["rabbitmq_restarted"])
