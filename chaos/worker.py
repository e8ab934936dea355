"""``pachyderm worker`` with fault points at its ports, for the chaos suite.

    python -m chaos.worker APP     # the same settings as `pachyderm worker APP`

The worker is the product's own (:func:`pachyderm.cli.serve`, as `pachyderm
worker` builds it); only its event store and its transport are wrapped, at
the ports, before it gets them (:class:`FaultyStore`, :class:`FaultyTransport`
and the inboxes it opens, :class:`FaultyInbox`). Nothing of the product is
patched. A timer's fire commits through the same ``commit`` as a delivered
command, so the kill points around commits take fires too. A test writes an
order into the file ``$CHAOS_CONTROL`` and sends SIGUSR1; the worker reads it:

- ``kill <point>``: arm: SIGKILL this process the next time it reaches
  ``<point>`` (one of :data:`POINTS`), right after logging ``chaos: killed at
  <point>``.
- ``disarm``: forget the armed point.
- ``cut``: shut down this process's sockets to the broker, as a network cut
  would; the broker closes the connection (returning its unacknowledged
  deliveries to their queues) and aio-pika's robust connection reconnects.

Invariant: a wrapper adds nothing but its fault point; every call goes on to
the wrapped port unchanged, so an unarmed chaos worker is ``pachyderm worker``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from pachyderm import Ref, load_settings, run
from pachyderm.cli import serve
from pachyderm.store import (
    Change,
    CommitOutcome,
    Committed,
    Duplicate,
    Erasure,
    EventStore,
    HasQuarantine,
    LoadedEntity,
    LoggedEvent,
    LogWakeups,
    OutboxEntry,
    QuarantineStore,
    RecordedEvent,
    Retained,
    StoredTimer,
)
from pachyderm.store._records import ListedEntity
from pachyderm.transport import Delivery, Inbox, Message, MessageHandler, RoutedAgain, Transport
from pachyderm.transport._broker_addresses import broker_addresses

CONTROL_VARIABLE = "CHAOS_CONTROL"
MID_COMMIT_DELAY_VARIABLE = "CHAOS_MID_COMMIT_DELAY"

POINTS = {
    "before_commit": "a batch decided, its commit not yet sent",
    "mid_commit": "the commit statement sent, its outcome not yet read",
    "after_commit": "committed; no reply, no effect published, nothing acked",
    "before_fire": "a batch with a timer's fire decided, its commit not yet sent",
    "after_fire": "a timer's fire committed; nothing after it done",
    "before_effects": "committed and replied; its effects not yet published, nothing acked"
    " (or an effect the outbox sweep is about to publish)",
    "before_mark_published": "effects on the broker, not yet marked published in the outbox",
    "before_ack": "committed, replied, effects published; the deliveries not yet acked",
}
"""Where a worker can be told to die, in processing order."""


class Faults:
    """The armed kill point of this process, and the orders that arm it."""

    def __init__(self) -> None:
        self.armed: str | None = None

    def say(self, line: str) -> None:
        # Straight to the log file, unbuffered: the next thing may be SIGKILL.
        os.write(2, f"chaos: {line}\n".encode())

    def reached(self, point: str) -> None:
        """Die here if armed for ``point``."""
        if self.armed == point:
            self.say(f"killed at {point}")
            os.kill(os.getpid(), signal.SIGKILL)

    def on_signal(self, _signal: int, _frame: FrameType | None) -> None:
        order = Path(os.environ[CONTROL_VARIABLE]).read_text().split()
        match order:
            case ["kill", point] if point in POINTS:
                self.armed = point
                self.say(f"armed {point}")
            case ["disarm"]:
                self.armed = None
                self.say("disarmed")
            case ["cut"]:
                self.say(f"cut {cut_broker_sockets()} broker sockets")
            case _:
                self.say(f"unknown order {order!r}")


def cut_broker_sockets() -> int:
    """Shut down every socket of this process connected to a broker's port (any node's
    of a cluster)."""
    addresses = broker_addresses(os.environ.get("PACHYDERM_AMQP_URL", "amqp://localhost/"))
    ports = {urlsplit(address).port or 5672 for address in addresses}
    cut = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            # A duplicate of the descriptor: shutting it down cuts the connection
            # for the original too, and closing it leaves the original alone.
            with socket.socket(fileno=os.dup(int(name))) as duplicate:
                inet = duplicate.family in (socket.AF_INET, socket.AF_INET6)
                if inet and duplicate.getpeername()[1] in ports:
                    duplicate.shutdown(socket.SHUT_RDWR)
                    cut += 1
        except OSError:
            continue  # closed meanwhile, or not connected
    return cut


class FaultyStore:
    """An :class:`EventStore` with the points ``before_commit``, ``mid_commit``,
    ``after_commit`` (around :meth:`commit`), ``before_fire`` and ``after_fire``
    (around a :meth:`commit` with a timer's fire in it) and ``before_mark_published``."""

    def __init__(self, store: EventStore, faults: Faults, *, mid_commit_delay: float) -> None:
        self._store = store
        self._faults = faults
        self._mid_commit_delay = mid_commit_delay

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        fires = any(change.fires is not None for change in changes)
        if fires:
            self._faults.reached("before_fire")
        self._faults.reached("before_commit")
        if self._faults.armed == "mid_commit":
            # Let the statement reach PostgreSQL, then die before reading its outcome.
            sending = asyncio.ensure_future(self._store.commit(changes))
            await asyncio.sleep(self._mid_commit_delay)
            self._faults.say(f"commit {'already done' if sending.done() else 'in flight'}")
            self._faults.reached("mid_commit")
            return await sending
        outcomes = await self._store.commit(changes)
        if any(isinstance(outcome, Committed) for outcome in outcomes):
            if fires:
                self._faults.reached("after_fire")
            self._faults.reached("after_commit")
        return outcomes

    async def mark_published(self, effect_ids: Sequence[uuid.UUID]) -> None:
        self._faults.reached("before_mark_published")
        await self._store.mark_published(effect_ids)

    # -- the rest of the port, as it is

    async def migrate(self) -> int:
        return await self._store.migrate()

    async def load(self, ref: Ref, *, use_snapshot: bool = True) -> LoadedEntity:
        return await self._store.load(ref, use_snapshot=use_snapshot)

    async def recorded(
        self, commands: Sequence[tuple[uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, str], Duplicate]:
        return await self._store.recorded(commands)

    async def versions(self, entity_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        return await self._store.versions(entity_ids)

    async def history(
        self, entity_id: uuid.UUID, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        return await self._store.history(entity_id, from_version, limit)

    async def pending_effects(self, limit: int = 100, older_than: float = 0.0) -> list[OutboxEntry]:
        return await self._store.pending_effects(limit, older_than)

    async def postpone_effects(self, delays: Mapping[uuid.UUID, float]) -> None:
        await self._store.postpone_effects(delays)

    async def due_timers(
        self, partition: int, until: datetime, limit: int, *, skip: Collection[uuid.UUID] = ()
    ) -> list[StoredTimer]:
        return await self._store.due_timers(partition, until, limit, skip=skip)

    async def entity_timers(self, entity_id: uuid.UUID) -> list[StoredTimer]:
        return await self._store.entity_timers(entity_id)

    async def postpone_timers(
        self, delays: Mapping[tuple[uuid.UUID, str], float]
    ) -> dict[tuple[uuid.UUID, str], int]:
        return await self._store.postpone_timers(delays)

    async def hold_timers(self, keys: Sequence[tuple[uuid.UUID, str]]) -> None:
        await self._store.hold_timers(keys)

    async def release_timer(self, entity_id: uuid.UUID, key: str) -> bool:
        return await self._store.release_timer(entity_id, key)

    async def count_timers(self) -> int:
        return await self._store.count_timers()

    async def list_entities(
        self,
        entity_type: str,
        *,
        after: uuid.UUID | tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
        by_change: bool = False,
    ) -> list[ListedEntity]:
        return await self._store.list_entities(
            entity_type, after=after, limit=limit, by_change=by_change
        )

    async def read_log(self, partition: int, after: int, limit: int) -> list[LoggedEvent]:
        return await self._store.read_log(partition, after, limit)

    async def log_heads(self) -> dict[int, int]:
        return await self._store.log_heads()

    def log_wakeups(self) -> LogWakeups:
        return self._store.log_wakeups()

    async def close(self) -> None:
        await self._store.close()

    async def prune(self, retained: Retained, older_than: float, limit: int) -> int:
        return await self._store.prune(retained, older_than, limit)

    async def count_prunable(self, retained: Retained, older_than: float) -> int:
        return await self._store.count_prunable(retained, older_than)

    async def erase(self, ref: Ref) -> Erasure:
        return await self._store.erase(ref)

    async def prune_ended(self, limit: int) -> int:
        return await self._store.prune_ended(limit)

    async def count_prunable_ended(self) -> int:
        return await self._store.count_prunable_ended()

    def quarantine_store(self) -> QuarantineStore:
        """The wrapped store's quarantine (without it the worker would keep none:
        poison commands would take workers down for ever)."""
        assert isinstance(self._store, HasQuarantine), "the chaos fleet's store keeps one"
        return self._store.quarantine_store()


class FaultyInbox:
    """An :class:`Inbox` with the point ``before_ack``."""

    def __init__(self, inbox: Inbox, faults: Faults) -> None:
        self._inbox = inbox
        self._faults = faults
        self.partition = inbox.partition

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._faults.reached("before_ack")
        await self._inbox.ack(deliveries)

    async def take(self, max_count: int) -> list[Delivery]:
        return await self._inbox.take(max_count)

    async def dead_letter(self, deliveries: Sequence[Delivery]) -> None:
        await self._inbox.dead_letter(deliveries)

    async def requeue(self, deliveries: Sequence[Delivery]) -> None:
        await self._inbox.requeue(deliveries)

    async def close(self) -> None:
        await self._inbox.close()


class FaultyTransport:
    """A :class:`Transport` with the point ``before_effects`` (before publishing any
    effect, to an entity or to a handler), whose inboxes are :class:`FaultyInbox`."""

    def __init__(self, transport: Transport, faults: Faults) -> None:
        self._transport = transport
        self._faults = faults
        self.topology = transport.topology

    @property
    def reconnects(self) -> int:
        return getattr(self._transport, "reconnects", 0)  # see worker._reachability

    async def publish_command(self, message: Message) -> None:
        # The worker publishes commands only as effects: a Send to another entity.
        self._faults.reached("before_effects")
        await self._transport.publish_command(message)

    async def publish_effect(self, message: Message) -> None:
        self._faults.reached("before_effects")
        await self._transport.publish_effect(message)

    async def open_inbox(self, partition: int, prefetch: int) -> Inbox:
        return FaultyInbox(await self._transport.open_inbox(partition, prefetch), self._faults)

    # -- the rest of the port, as it is

    async def start(self) -> None:
        await self._transport.start()

    async def close(self) -> None:
        await self._transport.close()

    async def route_waiting_effects(self) -> RoutedAgain:
        return await self._transport.route_waiting_effects()

    async def publish_replies(self, messages: Sequence[Message]) -> None:
        await self._transport.publish_replies(messages)

    async def listen_replies(self, handler: MessageHandler) -> str:
        return await self._transport.listen_replies(handler)

    async def consume_effects(
        self, group: str, routing_keys: Sequence[str], handler: MessageHandler
    ) -> None:
        await self._transport.consume_effects(group, routing_keys, handler)


def main(app: str) -> int:
    """``pachyderm worker APP`` with every port wrapped in its fault points."""
    faults = Faults()
    signal.signal(signal.SIGUSR1, faults.on_signal)
    delay = float(os.environ.get(MID_COMMIT_DELAY_VARIABLE, "0.001"))
    run(
        serve(
            load_settings(),
            app,
            wrap_store=lambda store: FaultyStore(store, faults, mid_commit_delay=delay),
            wrap_transport=lambda transport: FaultyTransport(transport, faults),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
