"""Dead-lettered effects on RabbitMQ: listed without being lost, replayed with a confirm.

An effect whose handler failed every try is rejected by its dispatcher and the
group's queue dead-letters it to ``<ns>.dead-letter``, the queue partition
queues dead-letter commands to. The broker records where it died in the
``x-death`` header; a message that died in an effects queue
(``<ns>.effects.<group>``) is a dead-lettered effect, anything else (a command)
is left alone.

Invariants: reading takes each message without acknowledging it and hands them
all back at the end (a channel's unsettled messages return to their queue when
it closes), so listing loses nothing, even if the process dies meanwhile.
Replaying publishes a copy to the effects exchange under its original routing
key, waits for the broker's confirm, and only then acknowledges (removes) the
dead letter: a crash in between leaves it twice (consumers de-duplicate on the
effect id), never nowhere. A pass is bounded by the queue's length when it
starts, so it never reads what it put back itself.

Messages go back with ``basic.nack`` (requeue), which RabbitMQ 4.3 and later do not
count as a failed delivery. RabbitMQ 4.0 to 4.2 count every return and give quorum
queues a default delivery limit of 20, beyond which ``<ns>.dead-letter`` (which has
no dead-letter exchange of its own) would drop a message: there, give it the policy
``delivery-limit: -1`` before listing often. (3.x queues have no default limit.)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from ._amqp import ack, delivered, publish, underlay
from ._message import Message
from ._topology import Topology

_EFFECT_ID_HEADER = "pachyderm-effect-id"
# Quorum queues count deliveries in this header; a replayed effect starts afresh.
_DELIVERY_COUNT_HEADER = "x-delivery-count"


@dataclass(frozen=True, slots=True)
class DeadLetteredEffect:
    """One effect waiting in the dead-letter queue."""

    effect_id: str
    handler: str
    queue: str
    """The effects queue (its group's) the effect was dead-lettered from."""
    reason: str
    """The broker's: ``rejected`` (its handler failed every try), ``delivery_limit``..."""
    deaths: int
    """How often it was dead-lettered from that queue (more than 1 after a replay)."""
    died_at: datetime | None
    message: Message


def _last_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]  # the broker keeps the latest first
    return None


def dead_lettered_effect(message: Message, topology: Topology) -> DeadLetteredEffect | None:
    """The dead-lettered effect ``message`` is, or None when it died elsewhere (a command)."""
    death = _last_death(message.headers)
    if death is None:
        return None
    queue = str(death.get("queue", ""))
    if not queue.startswith(topology.effects_queue("")):
        return None
    effect_id = message.message_id or message.headers.get(_EFFECT_ID_HEADER) or ""
    count = death.get("count")
    died_at = death.get("time")
    return DeadLetteredEffect(
        effect_id=str(effect_id),
        handler=message.routing_key.removeprefix("effect."),
        queue=queue,
        reason=str(death.get("reason", "")),
        deaths=count if isinstance(count, int) else 1,
        died_at=died_at if isinstance(died_at, datetime) else None,
        message=message,
    )


@asynccontextmanager
async def _reading(
    connection: AbstractRobustConnection, topology: Topology, *, confirms: bool
) -> AsyncIterator[tuple[AbstractChannel, list[DeliveredMessage]]]:
    """The dead-letter queue's messages as it holds them now, taken unacknowledged on
    a channel of their own; whatever is not acknowledged returns to the queue when the
    channel closes, in its order."""
    async with connection.channel(publisher_confirms=confirms) as channel:
        raw = await underlay(channel)
        declared = await raw.queue_declare(topology.dead_letter_queue, passive=True)
        taken: list[DeliveredMessage] = []
        for _ in range(declared.message_count or 0):
            got = await raw.basic_get(topology.dead_letter_queue, no_ack=False)
            if isinstance(got.delivery, Basic.GetEmpty):
                break  # another reader holds the rest
            taken.append(got)
        yield channel, taken
        if taken:
            await _return_all(raw, taken[-1])


async def _return_all(raw: aiormq.abc.AbstractChannel, last: DeliveredMessage) -> None:
    """Hand back every message still unsettled on the channel, up to ``last``."""
    assert last.delivery_tag is not None  # a message got has one
    # If the channel is gone, the broker took them back already.
    with contextlib.suppress(aiormq.exceptions.ChannelInvalidStateError):
        await raw.basic_nack(last.delivery_tag, multiple=True, requeue=True)


async def list_dead_lettered_effects(
    connection: AbstractRobustConnection, topology: Topology
) -> list[DeadLetteredEffect]:
    """The effects in the dead-letter queue, oldest first; they stay there."""
    async with _reading(connection, topology, confirms=False) as (_, taken):
        found = (dead_lettered_effect(delivered(got), topology) for got in taken)
        return [dead for dead in found if dead is not None]


def _replayable(message: Message) -> Message:
    headers = {k: v for k, v in message.headers.items() if k != _DELIVERY_COUNT_HEADER}
    return replace(message, headers=headers)


async def replay_dead_lettered_effects(
    connection: AbstractRobustConnection,
    topology: Topology,
    effect_ids: Collection[str] | None = None,
) -> list[DeadLetteredEffect]:
    """Publish the dead-lettered effects (those of ``effect_ids``; all when None) to the
    effects exchange again, each removed from the dead-letter queue once confirmed;
    returns those replayed."""
    replayed: list[DeadLetteredEffect] = []
    async with _reading(connection, topology, confirms=True) as (channel, taken):
        for got in taken:
            dead = dead_lettered_effect(delivered(got), topology)
            if dead is None or (effect_ids is not None and dead.effect_id not in effect_ids):
                continue  # returned to the queue with the channel
            await publish(
                channel,
                topology.effects_exchange,
                _replayable(dead.message),
                "replaying a dead-lettered effect",
            )
            await ack(got)
            replayed.append(dead)
    return replayed
