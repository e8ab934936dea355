"""Effects that no effect group's queue was bound for, routed again on RabbitMQ.

The effects exchange has an alternate exchange, so an effect published while
no group's queue is bound for it (no dispatcher has run for its handler yet)
waits in ``<ns>.effects-unrouted`` instead of coming back to the worker,
where it would stall the outbox. A pass takes what waits there now, one
message at a time, publishes each to the effects exchange again (confirmed)
and only then acknowledges it: whatever a group is now bound for reaches it,
the rest is back in the unrouted queue, and a crash in between publishes an
effect twice (consumers de-duplicate on its id) but never loses one. A pass is
bounded by the queue's length when it starts, so it never chases its own tail.
"""

from __future__ import annotations

from aio_pika.abc import AbstractChannel
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from ._amqp import ack, delivered, publish, underlay
from ._port import RoutedAgain
from ._topology import Topology


async def _waiting(channel: AbstractChannel, topology: Topology) -> int:
    declared = await (await underlay(channel)).queue_declare(
        topology.unrouted_effects_queue, passive=True
    )
    return declared.message_count or 0


async def _take(channel: AbstractChannel, queue: str) -> DeliveredMessage | None:
    got = await (await underlay(channel)).basic_get(queue, no_ack=False)
    return None if isinstance(got.delivery, Basic.GetEmpty) else got


async def route_again(channel: AbstractChannel, topology: Topology) -> RoutedAgain:
    """One pass over the unrouted effects, on ``channel`` (publisher confirms on)."""
    taken = 0
    for _ in range(await _waiting(channel, topology)):
        message = await _take(channel, topology.unrouted_effects_queue)
        if message is None:
            break  # another dispatcher's pass took the rest
        await publish(
            channel, topology.effects_exchange, delivered(message), "routing an effect again"
        )
        await ack(message)
        taken += 1
    return RoutedAgain(taken, await _waiting(channel, topology))
