"""``pachyderm worker`` with faults built in, for the chaos suite and ``bench/chaos.py``.

    python -m bench.chaos_worker APP     # the same settings as `pachyderm worker APP`

Nothing in the product changes: before the worker starts, a few of its
methods are wrapped so that the process can be told to fail at a chosen
point. A test writes an order into the file ``$CHAOS_CONTROL`` and sends
SIGUSR1; the worker reads it:

- ``kill <point>``: arm: SIGKILL this process the next time it reaches
  ``<point>`` (one of :data:`POINTS`), right after logging ``chaos: killed at
  <point>``.
- ``disarm``: forget the armed point.
- ``cut``: shut down this process's sockets to the broker, as a network cut
  would; the broker closes the connection (returning its unacknowledged
  deliveries to their queues) and aio-pika's robust connection reconnects.

Every PostgreSQL session of the worker is named
``chaos:<namespace>:<worker>:<role>`` (``application_name``), so a test can
terminate this worker's backends and nobody else's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from pachyderm.cli import main
from pachyderm.store import Change, CommitOutcome, Committed, PostgresEventStore
from pachyderm.transport import _rabbitmq_inbox
from pachyderm.worker import _outbox

CONTROL_VARIABLE = "CHAOS_CONTROL"
MID_COMMIT_DELAY_VARIABLE = "CHAOS_MID_COMMIT_DELAY"

POINTS = {
    "before_commit": "a batch decided, its commit not yet sent",
    "mid_commit": "the commit statement sent, its outcome not yet read",
    "after_commit": "committed; no reply, no effect published, nothing acked",
    "before_effects": "committed and replied; its effects not yet published, nothing acked",
    "before_mark_published": "effects on the broker, not yet marked published in the outbox",
    "before_ack": "committed, replied, effects published; the deliveries not yet acked",
}
"""Where a worker can be told to die, in processing order."""


def application_name_prefix(namespace: str, worker: str) -> str:
    """What the ``application_name`` of every session of this worker starts with."""
    return f"chaos:{namespace}:{worker}:"


class _Faults:
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
    """Shut down every socket of this process connected to the broker's port."""
    port = urlsplit(os.environ.get("PACHYDERM_AMQP_URL", "")).port or 5672
    cut = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            # A duplicate of the descriptor: shutting it down cuts the connection
            # for the original too, and closing it leaves the original alone.
            with socket.socket(fileno=os.dup(int(name))) as duplicate:
                inet = duplicate.family in (socket.AF_INET, socket.AF_INET6)
                if inet and duplicate.getpeername()[1] == port:
                    duplicate.shutdown(socket.SHUT_RDWR)
                    cut += 1
        except OSError:
            continue  # closed meanwhile, or not connected
    return cut


def _install(faults: _Faults) -> None:
    """Wrap the product's methods at the points of :data:`POINTS`."""
    commit = PostgresEventStore.commit
    mid_commit_delay = float(os.environ.get(MID_COMMIT_DELAY_VARIABLE, "0.001"))

    async def chaotic_commit(
        self: PostgresEventStore, changes: Sequence[Change]
    ) -> list[CommitOutcome]:
        faults.reached("before_commit")
        if faults.armed == "mid_commit":
            # Let the statement reach PostgreSQL, then die before reading its outcome.
            sending = asyncio.ensure_future(commit(self, changes))
            await asyncio.sleep(mid_commit_delay)
            faults.say(f"commit {'already done' if sending.done() else 'in flight'}")
            faults.reached("mid_commit")
        outcomes = await commit(self, changes)
        if any(isinstance(outcome, Committed) for outcome in outcomes):
            faults.reached("after_commit")
        return outcomes

    publish_committed = _outbox.EffectPublisher.publish_committed

    async def chaotic_publish_committed(
        self: _outbox.EffectPublisher, changes: Sequence[Change], **options: Any
    ) -> None:
        if _outbox.outbox_entries(changes):
            faults.reached("before_effects")
        await publish_committed(self, changes, **options)

    mark_published = PostgresEventStore.mark_published

    async def chaotic_mark_published(self: PostgresEventStore, effect_ids: Any) -> None:
        faults.reached("before_mark_published")
        await mark_published(self, effect_ids)

    ack = _rabbitmq_inbox.RabbitMQInbox.ack

    async def chaotic_ack(self: _rabbitmq_inbox.RabbitMQInbox, deliveries: Any) -> None:
        faults.reached("before_ack")
        await ack(self, deliveries)

    PostgresEventStore.commit = chaotic_commit  # type: ignore[method-assign]
    PostgresEventStore.mark_published = chaotic_mark_published  # type: ignore[method-assign]
    _outbox.EffectPublisher.publish_committed = chaotic_publish_committed  # type: ignore[method-assign]
    _rabbitmq_inbox.RabbitMQInbox.ack = chaotic_ack  # type: ignore[method-assign]


def _name_sessions(namespace: str, worker: str) -> None:
    """Give every asyncpg pool's sessions an ``application_name`` naming this worker."""
    create_pool: Callable[..., Any] = asyncpg.create_pool

    def named_pool(*arguments: Any, **options: Any) -> Any:
        settings = dict(options.pop("server_settings", None) or {})
        role = settings.get("application_name", "pachyderm")
        prefix = application_name_prefix(namespace, worker)
        settings["application_name"] = f"{prefix}{role}"
        return create_pool(*arguments, server_settings=settings, **options)

    asyncpg.create_pool = named_pool


def run(app: str) -> int:
    faults = _Faults()
    _install(faults)
    _name_sessions(
        os.environ.get("PACHYDERM_NAMESPACE", "pachyderm"),
        os.environ.get("PACHYDERM_WORKER_ID", str(os.getpid())),
    )
    signal.signal(signal.SIGUSR1, faults.on_signal)
    return main(["worker", app])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
