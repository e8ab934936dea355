"""Growing the partition count of a running fleet without reordering any entity's commands.

The hash ring spreads entity ids over its bound partition queues by jump
consistent hashing over its buckets (one per queue; see
:mod:`pachyderm.transport._rabbitmq_ring`). Growing the ring from ``old`` to
``new`` buckets moves some entities from an old queue to a new one and none
between old queues. Growing it one binding at a time would move an entity up to
once per binding, from new queue to new queue, while commands keep coming. So
:func:`grow_partitions` declares the growth's durable record
(``<ns>.commands.<old>-<new>``, an exchange nobody publishes to), the new queues,
then rebuilds the ring with it: the growth's own ring exchange, holding the new queues, is bound
to the ring with weight ``new - old``: one binding, one step of the ring, each
moved entity moving once. Every process rebuilds the ring from those records on
(re)connect, so processes started later, with either count, keep this layout.

A moved entity's commands published after that step wait in its new queue;
those published before may still wait in its old one. Its order holds if no new
queue is consumed before every old queue has been served up to the step. After
``grace`` seconds (for publishes the broker routed the old way to reach their
queues), a *fence* goes behind each old queue's backlog: a request naming no
entity type, which a worker answers (``invalid``) only after it committed every
delivery ahead of it (a partition applies its batches one after another and
replies after the commit). When every fence is answered, workers may be
restarted with the new count.

Invariants: the new queues have no consumer before the step and when the last
fence is answered (else :class:`RepartitionError`); running it again after a
failure is harmless (declaring and binding again change nothing, a fence is
answered and dropped). Shrinking is refused: the queues that would gain entities
are being served. So is growing on a store spread over servers by a shard map
(:func:`refuse_a_shard_map`): a moved entity's rows would stay on its old
partition's server.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from ._errors import TransportError
from ._wire import ENTITY_TYPE_HEADER, KIND_HEADER, QUERY
from .transport import Topology, connect_to_broker
from .transport._amqp import translated_errors
from .transport._probe import probing
from .transport._rabbitmq_ring import CONSISTENT_HASH, build_ring, exchange_exists
from .transport._rabbitmq_topology import declare_partition_queue, partitions_past

if TYPE_CHECKING:
    from .store import ShardMap

# Names no entity type (they are identifiers): every app answers it as invalid.
FENCE_ENTITY_TYPE = "pachyderm.fence"
_NAMED = {"connection_name": "repartition"}
_FULL_QUEUE_RETRY = 0.5


class RepartitionError(TransportError):
    """The partition count could not be changed safely; the message says what to do."""


class ShardedRepartitionError(RepartitionError):
    """The store is spread over servers by a shard map: growing the partition count
    would move entities to partitions on other servers, and no rows are moved."""


class PartitionCountError(RepartitionError):
    """The namespace has more partition queues than this process's count: it was grown."""


@dataclass(frozen=True, slots=True)
class Grown:
    """What :func:`grow_partitions` did: the counts, and how long the fences took."""

    old: int
    new: int
    fenced_in: float


def refuse_a_shard_map(shard_map: ShardMap | None) -> None:
    """Raise :class:`ShardedRepartitionError` if ``shard_map`` is set (before anything
    is declared): an entity moved to a new partition would find its history on the old
    partition's server, not its new one, and its commands would be refused."""
    if shard_map is not None:
        raise ShardedRepartitionError(
            "the store is spread over servers by a shard map (PACHYDERM_DATABASE_SHARDS)"
            ":: growing the partition count is not supported on"
            " it (moved entities' rows would stay on their old partition's server); nothing"
            " was changed. See docs/scaling.md, Limits known (beyond one server)"
        )


async def grow_partitions(
    url: str, topology: Topology, partitions: int, *, grace: float = 2.0, timeout: float = 120.0
) -> Grown:
    """``url``: the AMQP URL setting (one node's address, or a cluster's, comma-separated).
    Add partition queues up to ``partitions`` beside ``topology``'s in one step of the
    ring, then wait until the running fleet has served every old queue up to it (at
    most ``timeout`` seconds after the ``grace``)."""
    if partitions <= topology.partitions:
        raise RepartitionError(
            f"the fleet has {topology.partitions} partitions: only growing is supported"
            f" online (asked for {partitions}); see docs/scaling.md"
        )
    grown = replace(topology, partitions=partitions)
    added = range(topology.partitions, partitions)
    name = topology.growth_exchange(partitions)
    async with (
        translated_errors("growing the partitions"),
        await connect_to_broker(url, client_properties=_NAMED) as connection,
    ):
        channel = await connection.channel()
        await _refuse_if_taken(channel, grown, added, resumed=await exchange_exists(channel, name))
        # The growth's durable record first (run again after a failure, this growth is
        # then resumed), its queues, then the step: the ring rebuilt with the growth,
        # which binds its ring exchange, holding every added queue, to the ring at once.
        await channel.declare_exchange(name, CONSISTENT_HASH, durable=True)
        for partition in added:
            await declare_partition_queue(channel, partition, grown)
        await build_ring(channel, grown)
        await asyncio.sleep(grace)
        started = time.monotonic()
        await _fence(channel, topology, timeout)
        fenced_in = time.monotonic() - started
        await _refuse_if_taken(channel, grown, added, resumed=True)
    return Grown(topology.partitions, partitions, fenced_in)


async def _refuse_if_taken(
    channel: AbstractChannel, topology: Topology, added: range, *, resumed: bool
) -> None:
    """Raise if a worker consumes one of the ``added`` partitions, or (unless ``resumed``:
    this growth began before) one is declared: a process on the new count made it,
    bound into the hash ring one by one."""
    declared, consumed = [], []
    async with probing(channel) as probe:
        for partition in added:
            if (queue := await probe.queue(topology.partition_queue(partition))) is None:
                continue
            declared.append(partition)
            if queue.consumer_count:
                consumed.append(partition)
    new = f"PACHYDERM_PARTITIONS={topology.partitions}"
    if consumed:
        raise RepartitionError(
            f"partitions {consumed} are consumed: a worker runs with {new} already, and"
            " could reorder a moved entity's commands. Stop it, run this again while the"
            " fleet runs with the old count, then restart the workers"
        )
    if declared and not resumed:
        raise RepartitionError(
            f"partitions {declared} were declared by a process started with {new} before"
            " this command, bound into the hash ring one by one (one step of the ring"
            " each). Stop such processes; see docs/scaling.md to recover"
        )


async def _fence(channel: AbstractChannel, topology: Topology, timeout: float) -> None:
    """Put a fence behind each partition queue's backlog; return once all are answered."""
    pending: dict[str, int] = {}
    answered = asyncio.Event()
    replies = await channel.declare_queue(exclusive=True, auto_delete=True)

    async def on_reply(message: AbstractIncomingMessage) -> None:
        pending.pop(message.correlation_id or "", None)
        if not pending:
            answered.set()

    for partition in range(topology.partitions):
        pending[f"fence-{partition}-{uuid.uuid4().hex}"] = partition
    await replies.consume(on_reply, no_ack=True)
    try:
        async with asyncio.timeout(timeout):
            for fence_id, partition in list(pending.items()):
                await _put_fence(
                    channel, topology.partition_queue(partition), fence_id, replies.name
                )
            await answered.wait()
    except TimeoutError:
        raise RepartitionError(
            f"partitions {sorted(pending.values())} did not answer their fence within"
            f" {timeout:g}s: is the fleet running with PACHYDERM_PARTITIONS={topology.partitions}?"
            " The new queues are bound and fill up; do not start workers with the new count"
            " before this succeeds (run it again)"
        ) from None


def fence_message(fence_id: str, reply_to: str) -> aio_pika.Message:
    """A fence as docs/asyncapi.yaml describes it (the message ``Fence``)."""
    return aio_pika.Message(
        b"null",
        message_id=fence_id,
        reply_to=reply_to,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers={KIND_HEADER: QUERY, ENTITY_TYPE_HEADER: FENCE_ENTITY_TYPE},
    )


async def _put_fence(channel: AbstractChannel, queue: str, fence_id: str, reply_to: str) -> None:
    """Publish a fence to ``queue``; while the queue is at its length limit and refuses it
    (reject-publish), try again as the fleet drains it."""
    fence = fence_message(fence_id, reply_to)
    while True:
        try:
            await channel.default_exchange.publish(fence, queue)
            return
        except aiormq.exceptions.DeliveryError:
            await asyncio.sleep(_FULL_QUEUE_RETRY)


async def refuse_a_lower_count(url: str, topology: Topology) -> None:
    """Raise :class:`PartitionCountError` if a partition queue past ``topology``'s is
    served: the fleet runs on a larger count, and a worker on this one would compute
    another assignment than the others and consume some queues beside their owners.
    (While a growth is under way the added queues are not served, and workers on the
    old count must be able to start: they answer its fences.)"""
    async with (
        translated_errors("checking the partition count"),
        await connect_to_broker(url, client_properties=_NAMED) as connection,
    ):
        channel = await connection.channel()
        served = [
            partition
            async for partition, queue in partitions_past(channel, topology)
            if queue.consumer_count
        ]
    if served:
        raise PartitionCountError(
            f"partitions {served} are served: the fleet runs on more than"
            f" {topology.partitions} partitions (`pachyderm repartition` grew it); set"
            " PACHYDERM_PARTITIONS to the fleet's count"
        )
