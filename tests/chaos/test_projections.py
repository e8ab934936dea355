"""A projection runs beside the load (``pachyderm projections chaos.app:APP``): killed
with SIGKILL under load, twice, and with a worker killed too, its exactly-once read
model still ends equal to the stored histories (no ``projection_mismatch``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.run import Services

from .scenario import assert_survives

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.rabbitmq]


async def test_the_projection_killed_under_load_keeps_its_read_model_exact(
    tmp_path: Path, shared_services: Services
) -> None:
    faults = ["projections_killed", "kill_anywhere", "projections_killed"]
    verdict = await assert_survives(tmp_path, shared_services, faults)

    projected = verdict.stored.projected
    assert projected is not None, "the run kept no read model"
    with_events = {event.entity_id for event in verdict.stored.events}
    assert set(projected) == with_events
    assert sum(count for count, _ in projected.values()) == len(verdict.stored.events)
