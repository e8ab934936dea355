"""The embedded transport: RabbitMQ's semantics inside one process, without a broker.

For embedded mode and tests. Everything lives in memory on one event loop:
nothing survives the process, and two transports never share a message.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import count

from .._errors import TransportError
from ._message import Delivery, Message, pop_still_unsettled, pop_unsettled
from ._port import Inbox, MessageHandler, RoutedAgain
from ._topology import Topology

log = logging.getLogger(__name__)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether the AMQP topic binding ``pattern`` matches ``routing_key``.

    Words are separated by "."; ``*`` stands for exactly one word, ``#`` for
    zero or more.
    """
    return _words_match(_words(pattern), _words(routing_key))


def _words(key: str) -> tuple[str, ...]:
    return tuple(key.split(".")) if key else ()


def _words_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    first, rest = pattern[0], pattern[1:]
    if first == "#":
        return any(_words_match(rest, words[skipped:]) for skipped in range(len(words) + 1))
    return bool(words) and first in ("*", words[0]) and _words_match(rest, words[1:])


class _PartitionQueue:
    """The ready messages of one partition, oldest first, and whether each was delivered before."""

    def __init__(self) -> None:
        self.ready: deque[tuple[Message, bool]] = deque()
        # Takers wait on it for messages, or for room under their prefetch.
        self.changed = asyncio.Condition()

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


class _InProcessInbox:
    """Takes from one partition queue, holding at most ``prefetch`` unsettled deliveries."""

    def __init__(
        self,
        partition: int,
        queue: _PartitionQueue,
        *,
        prefetch: int,
        tags: Iterator[int],
        dead_letters: list[Message],
        forget: Callable[[_InProcessInbox], None],
    ) -> None:
        self.partition = partition
        self._queue = queue
        self._prefetch = prefetch
        self._tags = tags
        self._dead_letters = dead_letters
        self._forget = forget
        # By tag, in delivery order.
        self._unsettled: dict[int, Delivery] = {}
        self._closed = False

    def _can_take(self) -> bool:
        return self._closed or (bool(self._queue.ready) and len(self._unsettled) < self._prefetch)

    async def take(self, max_count: int) -> list[Delivery]:
        """Wait for at least one delivery, then return what is ready, up to ``max_count``."""
        if max_count < 1:
            raise ValueError("max_count must be at least 1")
        async with self._queue.changed:
            await self._queue.changed.wait_for(self._can_take)
            if self._closed:
                return []
            room = self._prefetch - len(self._unsettled)
            taken = min(max_count, room, len(self._queue.ready))
            return [self._deliver(*self._queue.ready.popleft()) for _ in range(taken)]

    def _deliver(self, message: Message, redelivered: bool) -> Delivery:
        delivery = Delivery(message, self.partition, next(self._tags), redelivered)
        self._unsettled[delivery.tag] = delivery
        return delivery

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle these deliveries as done."""
        self._settle(deliveries)
        await self._queue.notify()

    async def dead_letter(self, deliveries: Sequence[Delivery]) -> None:
        """Move these deliveries to the transport's ``dead_letters``."""
        self._dead_letters.extend(delivery.message for delivery in self._settle(deliveries))
        await self._queue.notify()

    async def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Put those still unsettled back at the front of the queue, in order, marked
        redelivered (RabbitMQ puts each back in its place: here, nothing older waits)."""
        await self._put_back(pop_still_unsettled(self._unsettled, deliveries))

    def _settle(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        return pop_unsettled(self._unsettled, deliveries, self.partition)

    async def close(self) -> None:
        """Stop taking; unsettled deliveries go back to the front of the queue, in order."""
        if self._closed:
            return
        self._closed = True
        self._forget(self)
        returned = list(self._unsettled.values())
        self._unsettled.clear()
        await self._put_back(returned)

    async def _put_back(self, deliveries: Sequence[Delivery]) -> None:
        """As a broker does when a consumer goes away: marked redelivered, in order, and
        ahead of the messages never delivered."""
        self._queue.ready.extendleft(reversed([(d.message, True) for d in deliveries]))
        await self._queue.notify()


class _Consumer:
    """Feeds the messages of a queue to a handler one at a time, in a task of its own."""

    def __init__(
        self,
        queue: asyncio.Queue[Message],
        handler: MessageHandler,
        on_failure: Callable[[Message], None],
    ) -> None:
        self._task = asyncio.create_task(self._run(queue, handler, on_failure))

    @staticmethod
    async def _run(
        queue: asyncio.Queue[Message],
        handler: MessageHandler,
        on_failure: Callable[[Message], None],
    ) -> None:
        while True:
            message = await queue.get()
            try:
                await handler(message)
            except Exception:
                on_failure(message)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.wait({self._task})


@dataclass
class _EffectGroup:
    """The effects queue of one group: its binding patterns and its waiting messages."""

    patterns: set[str] = field(default_factory=set)
    queue: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)

    def wants(self, routing_key: str) -> bool:
        return any(topic_matches(pattern, routing_key) for pattern in self.patterns)


def _log_failed_reply(message: Message) -> None:
    # Called while handling the handler's exception, which log.exception reports.
    log.exception("reply handler failed on the reply to %s", message.correlation_id)


class InProcessTransport:
    """The :class:`~pachyderm.transport.Transport` inside one process, without a broker.

    Same semantics as :class:`RabbitMQTransport`, on the same topology: a
    command goes to partition ``crc32(routing key) % partitions``, so one
    entity's commands always meet in one partition; what is dead-lettered
    lands in :attr:`dead_letters`. Effect handlers of a consumer run one at a
    time.
    """

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.dead_letters: list[Message] = []
        # Effects published while no group wanted them (RabbitMQ's alternate exchange).
        self.unrouted: list[Message] = []
        self._partitions = [_PartitionQueue() for _ in range(topology.partitions)]
        self._inboxes: set[_InProcessInbox] = set()
        self._groups: dict[str, _EffectGroup] = {}
        self._reply_queues: dict[str, asyncio.Queue[Message]] = {}
        self._consumers: list[_Consumer] = []
        self._tags = count(1)
        self._reply_addresses = (f"in-process.reply.{number}" for number in count(1))
        self._running = False

    async def start(self) -> None:
        """Start accepting messages (idempotent)."""
        self._running = True

    async def close(self) -> None:
        """Close inboxes and stop consumers (idempotent); reply addresses stop existing."""
        self._running = False
        for inbox in tuple(self._inboxes):
            await inbox.close()
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            await consumer.stop()
        self._reply_queues.clear()

    def _check_running(self) -> None:
        if not self._running:
            raise TransportError("the transport is not started, or was closed")

    def partition_of(self, routing_key: str) -> int:
        """The partition of a routing key: the same in every process and every run."""
        return zlib.crc32(routing_key.encode()) % self.topology.partitions

    async def publish_command(self, message: Message) -> None:
        """Queue a command on the partition of its routing key."""
        self._check_running()
        queue = self._partitions[self.partition_of(message.routing_key)]
        queue.ready.append((message, False))
        await queue.notify()

    async def publish_effect(self, message: Message) -> None:
        """Queue an effect for every group with a pattern matching its routing key.

        An effect no group wants waits in :attr:`unrouted`, as RabbitMQ's
        alternate exchange keeps it, until :meth:`route_waiting_effects`.
        """
        self._check_running()
        if not self._route(message):
            self.unrouted.append(message)

    def _route(self, message: Message) -> bool:
        groups = [group for group in self._groups.values() if group.wants(message.routing_key)]
        for group in groups:
            group.queue.put_nowait(message)
        return bool(groups)

    async def route_waiting_effects(self) -> RoutedAgain:
        """Hand the waiting effects that a group now wants to it; the rest wait on."""
        self._check_running()
        taken, self.unrouted = self.unrouted, []
        self.unrouted = [message for message in taken if not self._route(message)]
        return RoutedAgain(len(taken), len(self.unrouted))

    async def publish_replies(self, messages: Sequence[Message]) -> None:
        """Hand each reply to the listener at its ``routing_key``; dropped if there is none."""
        self._check_running()
        for message in messages:
            queue = self._reply_queues.get(message.routing_key)
            if queue is not None:
                queue.put_nowait(message)

    async def open_inbox(self, partition: int, prefetch: int) -> Inbox:
        """Take from one partition with at most ``prefetch`` unsettled deliveries."""
        self.topology.partition_queue(partition)  # checks the partition number
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._check_running()
        inbox = _InProcessInbox(
            partition,
            self._partitions[partition],
            prefetch=prefetch,
            tags=self._tags,
            dead_letters=self.dead_letters,
            forget=self._inboxes.discard,
        )
        self._inboxes.add(inbox)
        return inbox

    async def listen_replies(self, handler: MessageHandler) -> str:
        """Register ``handler`` under a new reply address, which is returned."""
        self._check_running()
        address = next(self._reply_addresses)
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self._reply_queues[address] = queue
        self._consumers.append(_Consumer(queue, handler, _log_failed_reply))
        return address

    async def consume_effects(
        self, group: str, routing_keys: Sequence[str], handler: MessageHandler
    ) -> None:
        """Consume the effects of ``group`` matching ``routing_keys`` (AMQP topic patterns).

        A handler that raises dead-letters the effect.
        """
        self._check_running()
        effect_group = self._groups.setdefault(group, _EffectGroup())
        effect_group.patterns.update(routing_keys)
        on_failure = partial(self._dead_letter_failed_effect, group)
        self._consumers.append(_Consumer(effect_group.queue, handler, on_failure))

    def _dead_letter_failed_effect(self, group: str, message: Message) -> None:
        # Called while handling the handler's exception, which log.exception reports.
        log.exception(
            "effect handler of group %r failed on %s; dead-lettering it", group, message.message_id
        )
        self.dead_letters.append(message)

    async def queue_depths(self) -> dict[str, int]:
        """Messages ready in each partition queue, the number dead-lettered, and the
        number of effects waiting unrouted."""
        depths = {
            self.topology.partition_queue(number): len(queue.ready)
            for number, queue in enumerate(self._partitions)
        }
        depths[self.topology.dead_letter_queue] = len(self.dead_letters)
        depths[self.topology.unrouted_effects_queue] = len(self.unrouted)
        return depths
