"""The fleet of the poison app (worker processes on the real RabbitMQ and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pachyderm.testing import ProcessFleet, process_fleet

from ..integration.harness import ROOT

APP = "tests.quarantine.poison_app:APP"
PARTITIONS = 6


@pytest.fixture
async def fleet(
    tmp_path: Path, namespace: str, postgres_dsn: str, rabbitmq_url: str
) -> AsyncIterator[ProcessFleet]:
    async with process_fleet(
        tmp_path, namespace, postgres_dsn, rabbitmq_url, app=APP, partitions=PARTITIONS, cwd=ROOT
    ) as running:
        yield running
