"""The hash ring: which partition queue a command reaches, rebuilt in order on every connect.

The commands exchange (durable, ``x-consistent-hash``) has one binding: to the ring
exchange ``<ns>.commands.ring``, also ``x-consistent-hash`` but transient, whose
bindings are the ring: the partition queues in order, weight 1 each, then each
growth's own ring exchange (its added queues in order) with the growth's weight.
The plugin hashes an entity id by jump consistent hashing over the ring's buckets in
the order their bindings were made, so the order is the routing.

Why transient: after a restart, RabbitMQ 3.10 rebuilds a durable consistent-hash
exchange's ring from its bindings in the order it recovers them, not the order they
were made (docs/scaling.md, "The hash ring across a restart": 373 of 400 entities
moved queue), and an entity's commands queued before and after the restart would be
decided by two partitions. A transient exchange does not come back: after a restart
the commands exchange routes nowhere (a mandatory publish is returned, and this
module's :func:`publish_routed` rebuilds the ring and publishes once more) until a
process rebuilds the ring in the order that defines it.

Invariants:

- The ring is bound to the commands exchange last, once whole: a publish finds the
  whole ring or no route, never a part of it.
- Processes rebuilding at once build one ring: each binds in the same order, and a
  binding made twice is one binding, so whoever makes the first binding of a bucket
  made (or found) the one before it first.
- A namespace bound the older way (its queues and growth exchanges bound to the
  commands exchange itself) is moved to the ring without moving an entity: the ring
  is bound with weight :data:`MAX_PARTITIONS`, at least as many buckets as the old
  bindings have, so that a bucket of theirs takes exactly the ids that the ring would
  send to it; they are then removed from the last bucket down, each state routing
  every id as the one before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import aiormq
from aio_pika.abc import AbstractChannel

from .._errors import TransportError
from ._amqp import publish, underlay
from ._message import Message
from ._probe import Probe, probing
from ._topology import MAX_PARTITIONS, Topology

CONSISTENT_HASH = "x-consistent-hash"
_ONE = "1"  # a consistent-hash binding's key is its weight: one bucket


@dataclass(frozen=True, slots=True)
class Layout:
    """A namespace's partitions: ``base`` declared at first, then each growth's
    ``(old, new)`` counts, oldest first."""

    base: int
    growths: tuple[tuple[int, int], ...]

    @property
    def partitions(self) -> int:
        return self.growths[-1][1] if self.growths else self.base


async def layout(channel: AbstractChannel, topology: Topology) -> Layout:
    """The namespace's layout: its count (``topology``'s, or more where a growth
    recorded by ``pachyderm repartition`` declared queues past it) and the growths
    that led there, found by their durable records, walking down from the count.

    Queues past the count that no growth's record explains (a growth still declaring
    its queues: its record names a count not reached yet) are left out: the growth
    binds them itself.
    """
    async with probing(channel) as probe:
        return await _layout(probe, topology)


async def _layout(probe: Probe, topology: Topology) -> Layout:
    declared = topology.partitions
    while (
        declared < MAX_PARTITIONS
        and await probe.queue(replace(topology, partitions=declared + 1).partition_queue(declared))
        is not None
    ):
        declared += 1
    new = declared
    while new > topology.partitions and await _grown_from(probe, topology, new) is None:
        new -= 1
    growths: list[tuple[int, int]] = []
    while (old := await _grown_from(probe, topology, new)) is not None:
        growths.append((old, new))
        new = old
    return Layout(new, tuple(reversed(growths)))


async def _grown_from(probe: Probe, topology: Topology, new: int) -> int | None:
    for old in range(new - 1, 0, -1):
        if await probe.exchange(replace(topology, partitions=old).growth_exchange(new)):
            return old
    return None


async def exchange_exists(channel: AbstractChannel, name: str) -> bool:
    """Whether the exchange ``name`` is declared."""
    async with probing(channel) as probe:
        return await probe.exchange(name)


async def build_ring(channel: AbstractChannel, topology: Topology) -> Layout:
    """Bind the namespace's ring in order, then the commands exchange to it; then
    remove the bindings of the older layout, if any. Idempotent; returns the layout.
    Every partition queue and growth exchange of the layout must be declared."""
    found = await layout(channel, topology)
    grown = replace(topology, partitions=found.partitions)
    raw = await underlay(channel)
    ring = topology.ring_exchange
    await raw.exchange_declare(ring, exchange_type=CONSISTENT_HASH, durable=False)
    for partition in range(found.base):
        await raw.queue_bind(grown.partition_queue(partition), ring, routing_key=_ONE)
    for old, new in found.growths:
        mirror = replace(topology, partitions=old).ring_growth_exchange(new)
        await raw.exchange_declare(mirror, exchange_type=CONSISTENT_HASH, durable=False)
        for partition in range(old, new):
            await raw.queue_bind(grown.partition_queue(partition), mirror, routing_key=_ONE)
        await raw.exchange_bind(mirror, ring, routing_key=str(new - old))
    commands = topology.commands_exchange
    await raw.exchange_bind(ring, commands, routing_key=str(MAX_PARTITIONS))
    for old, new in reversed(found.growths):
        growth = replace(topology, partitions=old).growth_exchange(new)
        await raw.exchange_unbind(growth, commands, routing_key=str(new - old))
    for partition in reversed(range(found.base)):
        await raw.queue_unbind(grown.partition_queue(partition), commands, routing_key=_ONE)
    return found


def partitioning_exchanges(topology: Topology, found: Layout) -> list[str]:
    """The exchanges besides the commands exchange that route commands in a namespace
    laid out as ``found``: the ring's, and the growths' records (to delete them)."""
    growths = [(replace(topology, partitions=old), new) for old, new in found.growths]
    return [
        *(before.ring_growth_exchange(new) for before, new in growths),
        topology.ring_exchange,
        *(before.growth_exchange(new) for before, new in growths),
    ]


async def publish_routed(
    channel: AbstractChannel,
    topology: Topology,
    message: Message,
    rebuild: Callable[[], Awaitable[None]],
) -> None:
    """Publish a command on ``channel``; one the commands exchange returned as
    unroutable (the ring gone with a broker restart, and no process has rebuilt it
    yet) is published again once ``rebuild`` rebuilt the ring."""
    action = "publishing a command"
    try:
        await publish(channel, topology.commands_exchange, message, action)
    except TransportError as error:
        if not isinstance(error.__cause__, aiormq.exceptions.PublishError):
            raise
    else:
        return
    await rebuild()
    await publish(channel, topology.commands_exchange, message, action)
