"""Names of everything a namespace declares on the broker (the wire contract)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAMESPACE = re.compile(r"[a-z_][a-z0-9_]{0,62}")

DEFAULT_PARTITIONS = 16


@dataclass(frozen=True, slots=True)
class Topology:
    """The exchanges and queues of one namespace (one isolated fleet).

    - ``<ns>.commands``: ``x-consistent-hash`` exchange; routing key = entity id.
    - ``<ns>.commands.<i>``: ``partitions`` durable quorum queues (``i`` from 0,
      zero-padded to two digits), each bound to the commands exchange with weight "1".
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
    """

    namespace: str = "pachyderm"
    partitions: int = DEFAULT_PARTITIONS

    def __post_init__(self) -> None:
        if not _NAMESPACE.fullmatch(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} must match {_NAMESPACE.pattern}")
        if not 1 <= self.partitions <= 1024:
            raise ValueError("partitions must be between 1 and 1024")

    @property
    def commands_exchange(self) -> str:
        return f"{self.namespace}.commands"

    def partition_queue(self, partition: int) -> str:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} is not in 0..{self.partitions - 1}")
        return f"{self.namespace}.commands.{partition:02d}"

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
