"""The namespace on RabbitMQ: its exchanges and queues, declared the same way by every
process of a fleet (declaring is idempotent).

A consistent-hash exchange spreads commands over the partition queues, so the
commands of one entity always reach the same queue, in order. Every queue that
holds work is a durable quorum queue that dead-letters what fails too often.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    ExchangeType,
)
from pamqp.commands import Queue

from .._errors import TransportError
from ._probe import probing
from ._rabbitmq_ring import CONSISTENT_HASH, build_ring
from ._topology import MAX_PARTITIONS, Topology

# The exchange type that spreads commands over the partitions comes with a plugin.
_CONSISTENT_HASH_PLUGIN = "rabbitmq_consistent_hash_exchange"
# A message delivered this many times without being settled is dead-lettered: a
# backstop against a poison message that crashes worker after worker.
_DELIVERY_LIMIT = 50


# The queue arguments a setting gives, and the setting: a mismatch names it.
_SETTING_OF_ARGUMENT = {
    "x-max-length": "PACHYDERM_QUEUE_MAX_LENGTH",
    "x-overflow": "PACHYDERM_QUEUE_OVERFLOW",
}


class QueueArgumentsError(TransportError):
    """A partition queue exists with another length limit or overflow than this process
    declares: RabbitMQ cannot change a queue's arguments (PRECONDITION_FAILED)."""

    def __init__(self, queue: str, setting: str, refusal: str) -> None:
        self.queue = queue
        self.setting = setting
        super().__init__(
            f"the queue {queue!r} exists with another {setting} than this process's"
            f" (RabbitMQ: {refusal}). Give every process of the namespace the same {setting};"
            " to change it, stop the fleet, let the partition queues drain and delete them"
            " (`pachyderm topology` declares them again), or leave the setting as it was and"
            " set the limit with a RabbitMQ policy instead (max-length, overflow), which"
            " applies to existing queues"
        )


def partition_queues(topology: Topology) -> list[str]:
    return [topology.partition_queue(partition) for partition in range(topology.partitions)]


def grown_queue(topology: Topology, partition: int) -> str:
    """The queue of ``partition`` once ``topology`` grew to hold it (a name's width
    follows the count)."""
    return replace(topology, partitions=partition + 1).partition_queue(partition)


async def partitions_past(
    channel: AbstractChannel, topology: Topology
) -> AsyncIterator[tuple[int, Queue.DeclareOk]]:
    """Each partition queue declared past ``topology``'s count (a namespace grown by
    ``pachyderm repartition``) and what the broker says of it, up to the first missing.
    Asked beside ``channel``, on its connection."""
    async with probing(channel) as probe:
        for partition in range(topology.partitions, MAX_PARTITIONS):
            name = grown_queue(topology, partition)
            if (queue := await probe.queue(name)) is None:
                return  # the namespace's last partition queue is behind
            yield partition, queue


async def declare_partition_queue(
    channel: AbstractChannel, partition: int, topology: Topology
) -> AbstractQueue:
    """Declare a partition queue: a work queue with the topology's length limit, if any.

    A queue declared before with another limit raises :class:`QueueArgumentsError`.
    """
    name = topology.partition_queue(partition)
    limit: dict[str, Any] = {}
    if topology.max_length:
        limit = {"x-max-length": topology.max_length, "x-overflow": topology.overflow}
    try:
        return await declare_work_queue(channel, name, topology, limit)
    except aiormq.exceptions.ChannelPreconditionFailed as error:
        refusal = str(error)
        for argument, setting in _SETTING_OF_ARGUMENT.items():
            if f"'{argument}'" in refusal:
                raise QueueArgumentsError(name, setting, refusal) from error
        raise


async def declare_work_queue(
    channel: AbstractChannel,
    name: str,
    topology: Topology,
    extra: dict[str, Any] | None = None,
) -> AbstractQueue:
    """Declare a partition or effects queue: quorum, dead-lettering, delivery-limited,
    with ``extra`` arguments besides (a partition queue's length limit).

    Every declaration of one queue must carry the same arguments, or the broker
    refuses it: this is the one place they are spelled out.
    """
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": topology.dead_letter_exchange,
        "x-delivery-limit": _DELIVERY_LIMIT,
        **(extra or {}),
    }
    return await channel.declare_queue(name, durable=True, arguments=arguments)


async def _declare_commands_exchange(channel: AbstractChannel, topology: Topology) -> None:
    try:
        await channel.declare_exchange(topology.commands_exchange, CONSISTENT_HASH, durable=True)
    except aiormq.exceptions.ConnectionCommandInvalid as error:
        if "unknown exchange type" not in str(error):
            raise
        raise TransportError(
            f"RabbitMQ lacks the {CONSISTENT_HASH!r} exchange type: enable its plugin"
            f" with `rabbitmq-plugins enable {_CONSISTENT_HASH_PLUGIN}`"
        ) from error


async def declare_topology(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare the whole namespace; returns the effects exchange, for effect groups to bind.

    Declaring is idempotent, so every process of a fleet does it on start.
    """
    # First, so that a broker without the plugin fails before anything is declared.
    await _declare_commands_exchange(channel, topology)
    dead_letter = await channel.declare_exchange(
        topology.dead_letter_exchange, ExchangeType.FANOUT, durable=True
    )
    dead_letter_queue = await channel.declare_queue(
        topology.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead_letter_queue.bind(dead_letter)
    for partition in range(topology.partitions):
        await declare_partition_queue(channel, partition, topology)
    await build_ring(channel, topology)
    return await _declare_effects_exchange(channel, topology)


async def declare_events_exchange(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """The topic exchange the event relay publishes committed events to, declared by the
    relay (not by :func:`declare_topology`: a namespace without a relay has none) and by
    subscribers, which bind queues of their own to it."""
    return await channel.declare_exchange(
        topology.events_exchange, ExchangeType.TOPIC, durable=True
    )


async def _declare_effects_exchange(
    channel: AbstractChannel, topology: Topology
) -> AbstractExchange:
    """The effects exchange, with the exchange and queue that keep what it cannot route.

    Whatever no effect group's queue is bound for goes to the alternate
    exchange instead of coming back to its publisher, so an effect waits there
    for its handler's dispatcher rather than stall the outbox.
    """
    unrouted = await channel.declare_exchange(
        topology.unrouted_effects_exchange, ExchangeType.FANOUT, durable=True
    )
    unrouted_queue = await channel.declare_queue(
        topology.unrouted_effects_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await unrouted_queue.bind(unrouted)
    try:
        return await channel.declare_exchange(
            topology.effects_exchange,
            ExchangeType.TOPIC,
            durable=True,
            arguments={"alternate-exchange": topology.unrouted_effects_exchange},
        )
    except aiormq.exceptions.ChannelPreconditionFailed as error:
        raise TransportError(
            f"the exchange {topology.effects_exchange!r} was declared by an older Pachyderm,"
            f" without its alternate exchange: delete it (it holds no messages; dispatchers"
            f" bind their queues again when they start), e.g. `rabbitmqadmin delete exchange"
            f" name={topology.effects_exchange}`, then start again"
        ) from error
