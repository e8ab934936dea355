"""Connections cut, workers stalled or doubled, under load, on the suite's own services
(only this test's connections are touched)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.run import Services

from .scenario import assert_survives

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.rabbitmq]


async def test_a_workers_broker_connection_closes(
    tmp_path: Path, shared_services: Services
) -> None:
    await assert_survives(tmp_path, shared_services, ["broker_connection_closed"])


async def test_a_workers_postgresql_backends_are_terminated(
    tmp_path: Path, shared_services: Services
) -> None:
    await assert_survives(tmp_path, shared_services, ["postgres_backends_terminated"])


async def test_a_stalled_worker_comes_back_after_the_others_took_over(
    tmp_path: Path, shared_services: Services
) -> None:
    await assert_survives(tmp_path, shared_services, ["worker_stalled"])


async def test_two_workers_consume_the_same_partitions(
    tmp_path: Path, shared_services: Services
) -> None:
    await assert_survives(tmp_path, shared_services, ["two_workers_one_partition"])
