"""``pachyderm migrate`` (the database's schema) and ``pachyderm topology`` (the
broker's exchanges and queues)."""

from __future__ import annotations

import argparse

from .._settings import Settings
from ..store import open_store
from ._runtime import broker


async def migrate_command(settings: Settings, _: argparse.Namespace) -> None:
    store = await open_store(
        settings.database_url.get_secret_value(),
        namespace=settings.namespace,
        shards=settings.shard_map(),
    )
    try:
        version = await store.migrate()
    finally:
        await store.close()
    print(f"schema of namespace {settings.namespace!r} is at version {version}")


async def topology_command(settings: Settings, _: argparse.Namespace) -> None:
    async with broker(settings, "topology") as transport:
        topology = transport.topology
        print(f"declared {topology.commands_exchange} with {topology.partitions} partitions,")
        print(f"{topology.effects_exchange} and {topology.dead_letter_queue}")
