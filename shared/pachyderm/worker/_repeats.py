"""Redelivered commands that applied before: answered from their stored replies.

A worker that dies after it committed a batch and before it acknowledged it (killed,
or taken down by a poison in a later batch) leaves those commands to be delivered
again, marked *redelivered*; so do callers that retried meanwhile, once the retries
were delivered to it. Each applied already: its stored reply is its answer, whatever
happened since. Decided again, it would run its handler once more on newer state (and,
being redelivered, in a forked child of the quarantine's, one fork per entity): under
churn (workers dying every few seconds) a hot entity's backlog of such repeats filled
every child's slot and held its callers past a minute (session 17's chaos runs). So
the quarantine answers them here, before admission: no handler, no child, no attempt
counted.

Invariant: only deliveries from the broker (not stored commands run again, whose rows
the quarantine settles itself) whose ``(entity, command id)`` the store has recorded.
The answer is what the command's first application answered; an entity that ended or
was parked since does not change it (its order is not at stake: a repeat changes
nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

from .._execution import read_stored_reply
from .._hooks import WorkerHooks
from .._wire import ENTITY_TYPE_HEADER, ok_reply, rejected_reply
from ..store import Duplicate
from ..transport import Delivery, Message, Transport

Repeat = tuple[Delivery, Duplicate]
"""A redelivered command and what the store recorded for it."""


def stored_answer(request: Message, stored: Duplicate) -> Message:
    """The reply to ``request`` that its stored reply makes."""
    reply, rejection = read_stored_reply(stored.reply)
    if rejection is not None:
        return rejected_reply(request, rejection)
    return ok_reply(request, stored.version, reply)


async def answer(
    repeats: Sequence[Repeat], transport: Transport, hooks: WorkerHooks, partition: int
) -> None:
    """Reply to each of ``repeats`` that asks for a reply (they are then settled by the
    caller), counted as duplicates by the hooks."""
    deliveries = [delivery for delivery, _ in repeats]
    exchange = transport.topology.commands_exchange
    with hooks.batch(exchange, partition, deliveries) as batch:
        await transport.publish_replies(
            [stored_answer(d.message, stored) for d, stored in repeats if d.message.reply_to]
        )
        if batch.measuring:
            for index, delivery in enumerate(deliveries):
                batch.outcome(index, _entity_type(delivery), "duplicate")


def _entity_type(delivery: Delivery) -> str | None:
    named = delivery.message.headers.get(ENTITY_TYPE_HEADER)
    return named if isinstance(named, str) else None
