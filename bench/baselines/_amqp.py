"""The AMQP side of the baseline workers, written the plain aio-pika way.

A baseline worker speaks the wire contract of docs/protocol.md, so the same
``pachyderm.Client`` drives it: it consumes the namespace's partition queues
(declared by the benchmark, as ``pachyderm topology`` would), reads the
command from the message (``pachyderm-entity-type`` and ``pachyderm-kind``
headers, ``type``, a msgpack body) and answers ``reply_to`` through the
default exchange with the protocol's envelope ``{"status": "ok", "version",
"reply"}``, ``correlation_id`` and the ``pachyderm-status`` header.

How it consumes is the textbook pattern: one channel per partition queue with
a prefetch, ``async for message in queue.iterator()``, one message at a time
(so each entity's commands apply in queue order), the reply published on a
channel with publisher confirms (as the fleet's replies are) and then the
delivery acked. Which partitions: ``pachyderm.fleet.assign`` over the fixed
worker names in ``BENCH_FLEET``, so two baseline processes split the 16
partitions exactly as two Pachyderm workers with the same names do.

Every 50 ms the worker prints ``handled <n>`` when the count moved: the
benchmark reads the drain's progress from that line, as it reads ``serving
partitions [...]`` to know the worker is consuming.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import msgpack
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueueIterator,
    AbstractRobustConnection,
)

from pachyderm.fleet import owned_by
from pachyderm.transport import Topology

KIND_HEADER = "pachyderm-kind"
STATUS_HEADER = "pachyderm-status"
MSGPACK = "application/msgpack"
PROGRESS_INTERVAL = 0.05
DEFAULT_PREFETCH = 512  # the fleet's default, PACHYDERM_PREFETCH


@dataclass(frozen=True, slots=True)
class Command:
    """One command (or query) as a baseline sees it."""

    entity_id: uuid.UUID
    is_query: bool
    name: str | None
    data: Any
    command_id: str | None


Apply = Callable[[Command], Awaitable[tuple[int, Any]]]
"""Apply a command (or answer a query): ``(version, state)`` to reply with."""


@dataclass(frozen=True, slots=True)
class BaselineSettings:
    """What a baseline process is told, through the same variables as a real worker."""

    amqp_url: str
    database_url: str
    topology: Topology
    worker_id: str
    fleet: tuple[str, ...]
    prefetch: int

    @classmethod
    def from_environment(cls) -> BaselineSettings:
        worker_id = os.environ["PACHYDERM_WORKER_ID"]
        return cls(
            amqp_url=os.environ["PACHYDERM_AMQP_URL"],
            database_url=os.environ.get("PACHYDERM_DATABASE_URL", ""),
            topology=Topology(
                os.environ["PACHYDERM_NAMESPACE"], int(os.environ["PACHYDERM_PARTITIONS"])
            ),
            worker_id=worker_id,
            fleet=tuple(os.environ.get("BENCH_FLEET", worker_id).split(",")),
            prefetch=int(os.environ.get("PACHYDERM_PREFETCH", DEFAULT_PREFETCH)),
        )

    @property
    def partitions(self) -> list[int]:
        return owned_by(self.topology.partitions, self.fleet, self.worker_id)


def parse(message: AbstractIncomingMessage) -> Command:
    return Command(
        entity_id=uuid.UUID(message.routing_key or ""),
        is_query=message.headers.get(KIND_HEADER) == "query",
        name=message.type,
        data=msgpack.unpackb(message.body) if message.body else None,
        command_id=message.message_id,
    )


def reply_message(message: AbstractIncomingMessage, version: int, state: Any) -> aio_pika.Message:
    body = {"status": "ok", "version": version, "reply": state}
    return aio_pika.Message(
        msgpack.packb(body),
        content_type=MSGPACK,
        correlation_id=message.correlation_id or message.message_id,
        headers={STATUS_HEADER: "ok"},
        delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
    )


class Progress:
    """Counts handled commands; prints the count when it moved, every 50 ms."""

    def __init__(self) -> None:
        self.handled = 0

    async def report_forever(self) -> None:
        shown = -1
        while True:
            if self.handled != shown:
                shown = self.handled
                print(f"handled {shown}", flush=True)
            await asyncio.sleep(PROGRESS_INTERVAL)


async def open_consumer(
    connection: AbstractRobustConnection, queue_name: str, prefetch: int
) -> AbstractQueueIterator:
    """Start consuming one partition queue on a channel of its own."""
    channel = await connection.channel(publisher_confirms=False)
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.get_queue(queue_name, ensure=False)
    messages = queue.iterator()
    await messages.consume()
    return messages


async def handle_in_order(
    messages: AbstractQueueIterator, apply: Apply, replies: AbstractChannel, progress: Progress
) -> None:
    """Serve one partition queue, one message at a time: apply, reply, ack."""
    async with messages:
        async for message in messages:
            version, state = await apply(parse(message))
            if message.reply_to:
                await replies.default_exchange.publish(
                    reply_message(message, version, state), routing_key=message.reply_to
                )
            await message.ack()
            progress.handled += 1


async def serve(apply: Apply, settings: BaselineSettings) -> None:
    """Consume this worker's partitions until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    connection = await aio_pika.connect_robust(
        settings.amqp_url, client_properties={"connection_name": settings.worker_id}
    )
    progress = Progress()
    replies = await connection.channel()  # aio-pika's default: publisher confirms on
    owned = settings.partitions
    consumers = [
        await open_consumer(connection, settings.topology.partition_queue(p), settings.prefetch)
        for p in owned
    ]
    # The consumers run until cancelled: they end on their own only by failing.
    running = asyncio.gather(
        *(handle_in_order(messages, apply, replies, progress) for messages in consumers),
        progress.report_forever(),
    )
    print(f"serving partitions {owned}", flush=True)
    stopping = asyncio.ensure_future(stop.wait())
    either: list[asyncio.Future[Any]] = [stopping, running]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    failure = None if running.cancelled() or not running.done() else running.exception()
    running.cancel()
    # Closing the connection hands the unacknowledged deliveries back to their queues.
    with contextlib.suppress(Exception):
        await connection.close()
    if failure is not None:
        print(f"consumer failed: {failure!r}", file=sys.stderr, flush=True)
        raise SystemExit(1)
