"""The fleet of the poison app (worker processes on the real RabbitMQ and PostgreSQL)."""

from __future__ import annotations

from ..integration.harness import fleet_fixture

APP = "tests.quarantine.poison_app:APP"
PARTITIONS = 6

fleet = fleet_fixture(APP, PARTITIONS)
