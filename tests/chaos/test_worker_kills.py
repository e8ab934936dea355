"""Workers SIGKILLed at each point of their processing, under load: nothing acknowledged
is lost, nothing applies twice, effects follow their commits, histories stay whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.run import Services
from chaos.worker import POINTS

from .scenario import assert_survives

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.mark.parametrize("point", list(POINTS))
async def test_a_worker_killed_at_a_point_of_its_batch(
    point: str, tmp_path: Path, shared_services: Services
) -> None:
    await assert_survives(tmp_path, shared_services, [f"kill_{point}"])


async def test_a_worker_killed_from_outside_anywhere(
    tmp_path: Path, shared_services: Services
) -> None:
    await assert_survives(tmp_path, shared_services, ["kill_anywhere"])
