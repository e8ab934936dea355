"""Names of everything a namespace declares on the broker (the wire contract)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAMESPACE = re.compile(r"[a-z_][a-z0-9_]{0,62}")

DEFAULT_PARTITIONS = 16
MAX_PARTITIONS = 1024
# What a partition queue at its length limit does (what quorum queues support).
REJECT_PUBLISH = "reject-publish"
OVERFLOWS = (REJECT_PUBLISH, "drop-head")


@dataclass(frozen=True, slots=True)
class Topology:
    """The exchanges and queues of one namespace (one isolated fleet).

    - ``<ns>.commands``: durable ``x-consistent-hash`` exchange; routing key = entity
      id. Bound to the ring exchange only (weight :data:`MAX_PARTITIONS`).
    - ``<ns>.commands.ring``: the hash ring, a transient ``x-consistent-hash``
      exchange every process binds in order on each (re)connect (see
      :mod:`pachyderm.transport._rabbitmq_ring`): the partition queues, weight "1"
      each, then each growth's ring exchange.
    - ``<ns>.commands.<i>``: ``partitions`` durable quorum queues (``i`` from 0,
      zero-padded to two digits).
    - ``<ns>.commands.<old>-<new>`` (counts zero-padded likewise): a durable exchange
      that records a growth from ``old`` to ``new`` partitions (``pachyderm
      repartition``); nothing is published to it. Its ring exchange,
      ``<ns>.commands.ring.<old>-<new>``, transient, holds the queues it added and is
      bound to the ring with weight ``new - old``.
    - ``<ns>.effects``: topic exchange; routing keys ``effect.<handler>``. Its
      alternate exchange is ``<ns>.effects-unrouted``.
    - ``<ns>.effects.<group>``: the durable quorum queue of an effect-handler
      group, declared by the group's dispatchers and bound for their handlers.
    - ``<ns>.effects-unrouted``: fanout exchange, and the quorum queue of the
      same name bound to it, where an effect waits while no group's queue is
      bound for it; a dispatcher routes it again once one is.
    - ``<ns>.events``: topic exchange where the event relay publishes committed
      events (declared by the relay, not by workers); routing keys
      ``<entity type>.<event name>``. Subscribers bind
      queues of their own; an event no queue is bound for is dropped.
    - ``<ns>.dead-letter``: fanout exchange, and the queue of the same name bound
      to it, where partition queues dead-letter what cannot be answered.

    ``max_length`` (0: none) limits each partition queue to that many ready
    messages; at the limit ``overflow`` says what the queue does: ``reject-publish``
    refuses the new command (its publisher's confirm is a nack: an
    :class:`~pachyderm.OverloadedError`), ``drop-head`` dead-letters the oldest one.
    Like ``partitions``, the same in every process of a namespace: they are queue
    arguments, which RabbitMQ refuses to change on an existing queue.
    """

    namespace: str = "pachyderm"
    partitions: int = DEFAULT_PARTITIONS
    max_length: int = 0
    overflow: str = REJECT_PUBLISH

    def __post_init__(self) -> None:
        if not _NAMESPACE.fullmatch(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} must match {_NAMESPACE.pattern}")
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be between 1 and {MAX_PARTITIONS}")
        if self.max_length < 0:
            raise ValueError("max_length must be 0 (no limit) or more")
        if self.overflow not in OVERFLOWS:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOWS)}")

    @property
    def commands_exchange(self) -> str:
        return f"{self.namespace}.commands"

    def partition_queue(self, partition: int) -> str:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} is not in 0..{self.partitions - 1}")
        return f"{self.namespace}.commands.{partition:02d}"

    def growth_exchange(self, partitions: int) -> str:
        """The exchange of a growth from this topology's count to ``partitions``."""
        return f"{self.commands_exchange}.{self.partitions:02d}-{partitions:02d}"

    @property
    def ring_exchange(self) -> str:
        """The transient exchange whose bindings are the hash ring."""
        return f"{self.commands_exchange}.ring"

    def ring_growth_exchange(self, partitions: int) -> str:
        """The transient ring exchange of a growth from this count to ``partitions``."""
        return f"{self.ring_exchange}.{self.partitions:02d}-{partitions:02d}"

    @property
    def effects_exchange(self) -> str:
        return f"{self.namespace}.effects"

    @property
    def unrouted_effects_exchange(self) -> str:
        return f"{self.namespace}.effects-unrouted"

    @property
    def unrouted_effects_queue(self) -> str:
        return f"{self.namespace}.effects-unrouted"

    def effects_queue(self, group: str) -> str:
        """The durable queue an effect-handler group consumes."""
        return f"{self.namespace}.effects.{group}"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dead-letter"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dead-letter"
