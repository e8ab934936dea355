"""``pachyderm repartition --to N``: grow a running fleet's partition count, keeping
each entity's commands in order (see :mod:`pachyderm._repartition` and the section
"Changing the partition count" of docs/scaling.md).

Run it with the fleet's present settings (``PACHYDERM_PARTITIONS`` the old count)
while the fleet runs; once it succeeds, restart every worker with the new count.
It refuses a store spread over servers by a shard map, before touching the broker.
It prints the event log's heads at the switch: a projection process is restarted
with the new count once its cursors reached them, so that it reads each moved
entity's events in order.
"""

from __future__ import annotations

import argparse

from .._client import topology_of
from .._repartition import grow_partitions, refuse_a_shard_map
from .._settings import Settings
from ..store import open_store


async def repartition_command(settings: Settings, arguments: argparse.Namespace) -> None:
    refuse_a_shard_map(settings.shard_map())
    topology = topology_of(settings)
    grown = await grow_partitions(
        settings.amqp_url.get_secret_value(),
        topology,
        arguments.to,
        grace=arguments.grace,
        timeout=arguments.timeout,
    )
    store = await open_store(settings.database_url.get_secret_value(), namespace=settings.namespace)
    try:
        heads = await store.log_heads()
    finally:
        await store.close()
    print(
        f"{topology.commands_exchange}: {grown.old} -> {grown.new} partitions; every old"
        f" partition served up to the switch ({grown.fenced_in:.1f}s)"
    )
    print(f"now restart every worker with PACHYDERM_PARTITIONS={grown.new}")
    print("restart projection processes likewise once their cursors reach these log heads:")
    for partition in range(grown.old):
        print(f"  partition {partition}: {heads.get(partition, 0)}")
