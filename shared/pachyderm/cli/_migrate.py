"""``pachyderm migrate`` (the database's schema) and ``pachyderm topology`` (the
broker's exchanges and queues)."""

from __future__ import annotations

import argparse

from .._settings import Settings
from ._runtime import broker
from ._store import settings_store


async def migrate_command(settings: Settings, _: argparse.Namespace) -> None:
    async with settings_store(settings) as store:
        version = await store.migrate()
    print(f"schema of namespace {settings.namespace!r} is at version {version}")


async def topology_command(settings: Settings, _: argparse.Namespace) -> None:
    async with broker(settings, "topology") as transport:
        topology = transport.topology
        print(f"declared {topology.commands_exchange} with {topology.partitions} partitions,")
        print(f"{topology.effects_exchange} and {topology.dead_letter_queue}")
