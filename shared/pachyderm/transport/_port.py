"""The transport port: what the worker fleet and its callers need from a broker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, Protocol

from ._message import Delivery, Message
from ._topology import Topology

MessageHandler = Callable[[Message], Awaitable[None]]


class RoutedAgain(NamedTuple):
    """What :meth:`Transport.route_waiting_effects` did."""

    taken: int
    """Effects taken from the unrouted queue and published again."""
    waiting: int
    """Effects still waiting there: no effect group's queue is bound for them."""


class Inbox(Protocol):
    """The deliveries of one partition queue, consumed by one worker."""

    partition: int

    async def take(self, max_count: int) -> list[Delivery]:
        """Wait for at least one delivery, then return all buffered, up to ``max_count``.

        Returns an empty list once the inbox is closed.
        """
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle these deliveries as done (they leave the queue)."""
        ...

    async def dead_letter(self, deliveries: Sequence[Delivery]) -> None:
        """Reject these deliveries without requeueing: the queue dead-letters them."""
        ...

    async def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Hand these deliveries back unsettled: they are delivered again, marked
        redelivered. Those settled already, or returned when the inbox closed, are
        skipped: for a batch that failed part way through settling."""
        ...

    async def close(self) -> None:
        """Stop consuming; deliveries not yet settled go back to the queue."""
        ...


class Transport(Protocol):
    """A broker connection of one namespace, as described by ``topology``.

    Every backend passes the same contract suite
    (:class:`pachyderm.testing.TransportContract`).
    """

    topology: Topology

    async def start(self) -> None:
        """Connect and declare the topology (idempotent, safe from many processes)."""
        ...

    async def close(self) -> None:
        """Close inboxes, listeners and the connection."""
        ...

    async def publish_command(self, message: Message) -> None:
        """Publish to the commands exchange; returns once the broker has it (confirmed)."""
        ...

    async def publish_effect(self, message: Message) -> None:
        """Publish to the effects exchange; returns once the broker has it (confirmed).

        An effect that no effect group's queue is bound for is kept in the
        namespace's unrouted-effects queue until :meth:`route_waiting_effects`
        routes it again: it is neither lost nor an error.
        """
        ...

    async def route_waiting_effects(self) -> RoutedAgain:
        """Publish again the effects waiting in the unrouted-effects queue, so those a
        group's queue is now bound for reach it; the others wait on (at least once)."""
        ...

    async def publish_replies(self, messages: Sequence[Message]) -> None:
        """Send replies, each to its ``routing_key`` (a caller's reply address), in order.

        A reply to an address that no longer exists is dropped, not an error.
        """
        ...

    async def open_inbox(self, partition: int, prefetch: int) -> Inbox:
        """Start consuming one partition queue with at most ``prefetch`` unsettled."""
        ...

    async def listen_replies(self, handler: MessageHandler) -> str:
        """Receive replies addressed to this connection; returns the reply address."""
        ...

    async def consume_effects(
        self, group: str, routing_keys: Sequence[str], handler: MessageHandler
    ) -> None:
        """Consume effects matching ``routing_keys`` from the durable queue of ``group``.

        A message is acknowledged after ``handler`` returns; if it raises, the
        message is dead-lettered.
        """
        ...
