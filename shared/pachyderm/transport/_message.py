"""What travels: AMQP-shaped messages, independent of any client library."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
