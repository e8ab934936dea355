"""What travels: AMQP-shaped messages, independent of any client library."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Message:
    """One message with the AMQP properties Pachyderm uses.

    ``routing_key`` is the entity id for commands, the reply address for
    replies, and ``effect.<handler>`` / ``command.<type>`` for effects.
    """

    body: bytes
    routing_key: str = ""
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    content_type: str | None = None
    type: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message taken from a partition queue, to be settled once handled.

    ``tag`` is the transport's own handle for settling; ``redelivered`` says
    the broker delivered it before (to this or another consumer).
    """

    message: Message
    partition: int
    tag: int
    redelivered: bool = False


def pop_unsettled(
    unsettled: dict[int, T], deliveries: Sequence[Delivery], partition: int
) -> list[T]:
    """Take these deliveries out of an inbox's ``unsettled`` (by tag), oldest first.

    Settling a delivery twice, or one its inbox returned when it closed, is a
    bug of the caller's: it raises rather than settle another message.
    """
    tags = sorted(delivery.tag for delivery in deliveries)
    if len(set(tags)) != len(tags) or not unsettled.keys() >= set(tags):
        raise ValueError(
            f"deliveries {tags} are not all unsettled in the inbox of partition"
            f" {partition}: settled before, or returned when it closed"
        )
    return [unsettled.pop(tag) for tag in tags]


def pop_still_unsettled(unsettled: dict[int, T], deliveries: Sequence[Delivery]) -> list[T]:
    """Take those of these deliveries still unsettled out of ``unsettled``, oldest first."""
    tags = sorted({delivery.tag for delivery in deliveries} & unsettled.keys())
    return [unsettled.pop(tag) for tag in tags]
