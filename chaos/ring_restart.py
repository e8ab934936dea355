"""Does an entity keep its partition queue across a restart of a single RabbitMQ node?

    python -m chaos.ring_restart [--entities 400] [--restarts 2] [--partitions 16]

A private RabbitMQ node (loopback, its own folder, removed after) gets a namespace's
topology; each of ``--entities`` entity ids is published once to the commands
exchange, and the partition queue it lands in is read back; then the node is
restarted, and the same again, ``--restarts`` times. Printed: how many entities
landed in another queue than before the first restart, and the consistent-hash
exchange's ring (bucket -> queue, from ``rabbitmqctl eval``) before and after.

What it showed on RabbitMQ 3.10 (session 13, docs/scaling.md "The hash ring across a
restart"): after each restart 384 of 400 entities landed elsewhere; the ring, bucket
i -> queue i when the bindings were made, came back with queue 01 moved to the last
bucket. Since session 16 the ring is a transient exchange that the topology's
declaration rebuilds in order after a restart: 0 moved (the test of it is
tests/chaos/test_ring_restart.py). A diagnostic, not a test: it prints what the
broker does.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import uuid

import aio_pika

from pachyderm.transport import Topology
from pachyderm.transport._rabbitmq_topology import declare_topology

from .services import PrivateRabbitMQ, PrivateServices


async def _landed(url: str, topology: Topology, entities: list[str]) -> dict[str, int]:
    """Publish one message per entity; the partition each landed in."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, topology)
        exchange = await channel.get_exchange(topology.commands_exchange)
        for entity in entities:
            await exchange.publish(aio_pika.Message(entity.encode()), routing_key=entity)
        landed: dict[str, int] = {}
        for partition in range(topology.partitions):
            queue = await channel.get_queue(topology.partition_queue(partition))
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                landed[message.body.decode()] = partition
        return landed
    finally:
        await connection.close()


def _ring(node: PrivateRabbitMQ) -> str:
    state = node.ctl("eval", "ets:tab2list(rabbit_exchange_type_consistent_hash_ring_state).")
    pairs = re.findall(r"(\d+) =>\s*\{resource,<<\"/\">>,queue,\s*<<\"[^\"]*\.(\d+)\">>\}", state)
    return " ".join(f"{bucket}:{queue}" for bucket, queue in pairs)


async def main(arguments: argparse.Namespace) -> None:
    entities = [str(uuid.uuid4()) for _ in range(arguments.entities)]
    topology = Topology(namespace=f"ring_{uuid.uuid4().hex[:8]}", partitions=arguments.partitions)
    private = await asyncio.to_thread(PrivateServices, postgres=False, rabbitmq=True)
    try:
        node = private.rabbitmq
        assert node is not None
        before = await _landed(node.url, topology, entities)
        print(f"ring as bound: {_ring(node)}", flush=True)
        for restart in range(1, arguments.restarts + 1):
            await asyncio.to_thread(node.stop)
            await asyncio.to_thread(node.start)
            after = await _landed(node.url, topology, entities)
            moved = sum(before[entity] != after.get(entity) for entity in entities)
            print(f"restart {restart}: {moved} of {len(entities)} entities moved", flush=True)
            print(f"ring after restart {restart}: {_ring(node)}", flush=True)
    finally:
        await asyncio.to_thread(private.close)


def entry() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=400)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=16)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    entry()
