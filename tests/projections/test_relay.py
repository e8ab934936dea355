"""The event relay on real RabbitMQ and PostgreSQL: a subscriber bound to ``<ns>.events``
gets every committed event at least once, in per-entity order, as stored, with its
headers; a relay stopped between publishing and advancing its cursor publishes the batch
again under the same message ids."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage

from pachyderm import (
    AnyEvent,
    App,
    DefinitionError,
    EventRelay,
    PachydermError,
    Projection,
    ProjectionContext,
)
from pachyderm.fleet import SoloMembership
from pachyderm.projections import ProjectionProcess, ProjectionRunner, RunnerOptions
from pachyderm.projections._relay import publish_confirmed
from pachyderm.store import LoggedEvent
from pachyderm.transport import Message, Topology
from pachyderm.transport._rabbitmq_topology import declare_events_exchange

from ..python_process import ROOT
from ..waiting import eventually
from . import tally
from .conftest import Backend
from .test_runners import FAST, PARTITIONS, running, write_tallies


@dataclass(frozen=True)
class Received:
    routing_key: str
    message_id: str
    type: str | None
    content_type: str | None
    persistent: bool
    headers: dict[str, Any]
    body: bytes


@dataclass
class Subscriber:
    """A queue of its own bound to ``<ns>.events`` with ``#``: what it received, in order."""

    received: list[Received]
    url: str
    exchange: str


@pytest.fixture
async def subscriber(rabbitmq_url: str, namespace: str) -> AsyncIterator[Subscriber]:
    exchange = Topology(namespace).events_exchange
    connection = await aio_pika.connect_robust(rabbitmq_url)
    found = Subscriber([], rabbitmq_url, exchange)

    async def on_message(message: AbstractIncomingMessage) -> None:
        assert message.message_id is not None
        assert message.routing_key is not None
        found.received.append(
            Received(
                message.routing_key,
                message.message_id,
                message.type,
                message.content_type,
                message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT,
                dict(message.headers),
                message.body,
            )
        )
        await message.ack()

    try:
        channel = await connection.channel()
        # A subscriber declares the exchange too (idempotent): its queue may come first.
        await declare_events_exchange(channel, Topology(namespace))
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="#")
        await queue.consume(on_message)
        yield found
    finally:
        await connection.close()
        async with await aio_pika.connect(rabbitmq_url) as cleanup:
            await (await cleanup.channel()).exchange_delete(exchange)


R = TypeVar("R", bound=EventRelay)


@contextlib.asynccontextmanager
async def closing(relay: R) -> AsyncIterator[R]:
    try:
        yield relay
    finally:
        await relay.close()


async def stored(backend: Backend) -> list[LoggedEvent]:
    """The whole log, partition by partition."""
    found: list[LoggedEvent] = []
    for partition in range(PARTITIONS):
        found += await backend.store.read_log(partition, 0, 10_000)
    return found


def assert_is_relayed(received: Received, logged: LoggedEvent) -> None:
    event = logged.event
    assert received.routing_key == f"tally.{event.name}"
    assert received.message_id == str(logged.event_id)
    assert received.type == event.name
    assert received.content_type == "application/msgpack"
    assert received.persistent
    assert received.body == event.data  # the bytes as stored
    assert received.headers == {
        "pachyderm-entity-type": "tally",
        "pachyderm-entity-id": str(event.entity_id),
        "pachyderm-version": event.version,
        "pachyderm-partition": logged.partition,
        "pachyderm-position": logged.position,
        "pachyderm-recorded-at": event.recorded_at.isoformat(),
        "pachyderm-schema-version": event.schema_version,
    }
    assert datetime.fromisoformat(received.headers["pachyderm-recorded-at"]) == event.recorded_at


def versions_by_entity(received: list[Received]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for message in received:
        found[message.headers["pachyderm-entity-id"]].append(message.headers["pachyderm-version"])
    return found


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_a_subscriber_gets_every_committed_event_in_per_entity_order(
    postgres: Backend, subscriber: Subscriber, namespace: str
) -> None:
    async with closing(EventRelay(amqp_url=subscriber.url, namespace=namespace)) as relay:
        app = tally.app(relay)
        process = ProjectionProcess(
            app,
            postgres.store,
            postgres.cursors,
            SoloMembership(),
            partitions=PARTITIONS,
            options=FAST,
        )
        async with running(process):
            await write_tallies(postgres, app, entities=8, each=12)
            log = await stored(postgres)
            assert len(log) == 96

            async def all_received() -> bool:
                return len(subscriber.received) >= len(log)

            await eventually(all_received, timeout=15)
    by_id = {str(logged.event_id): logged for logged in log}
    # A clean run publishes each event once: Added and Noted alike (AnyEvent).
    assert sorted(m.message_id for m in subscriber.received) == sorted(by_id)
    assert {m.type for m in subscriber.received} == {"Added", "Noted"}
    for message in subscriber.received:
        assert_is_relayed(message, by_id[message.message_id])
    for versions in versions_by_entity(subscriber.received).values():
        assert versions == list(range(1, 13))


class StallingRelay(EventRelay):
    """Publishes its first batch, has it confirmed, then never returns: a runner cancelled
    there stops between the publish and the cursor's advance."""

    def __init__(self, **where: Any) -> None:
        super().__init__(**where)
        self.published = asyncio.Event()

    async def apply_many(self, batch: Any) -> None:
        await super().apply_many(batch)
        self.published.set()
        await asyncio.Event().wait()


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_a_relay_stopped_mid_batch_publishes_it_again_under_the_same_ids(
    postgres: Backend, subscriber: Subscriber, namespace: str
) -> None:
    where = {"amqp_url": subscriber.url, "namespace": namespace}
    options = RunnerOptions(batch_size=5, min_interval=0.005, max_interval=0.05)
    entities = [e for e in (uuid.uuid4() for _ in range(40)) if e.int % 4 == 0][:2]
    app = tally.app(EventRelay(**where))
    for version in range(6):  # 12 events in partition 0, the two entities' interleaved
        for entity in entities:
            await tally.commit(postgres.store, app, entity, version, tally.Added(version + 1))
    await postgres.cursors.ensure("event_relay", PARTITIONS)

    async with closing(StallingRelay(**where)) as stalling:
        runner = ProjectionRunner(
            tally.app(stalling), postgres.store, postgres.cursors, stalling, 0, options=options
        )
        task = asyncio.create_task(runner.step())
        await asyncio.wait_for(stalling.published.wait(), timeout=10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    [cursor] = [c for c in await postgres.cursors.cursors("event_relay") if c.partition == 0]
    assert cursor.position == 0  # published and confirmed, but not advanced

    async with closing(EventRelay(**where)) as relay:
        runner = ProjectionRunner(
            tally.app(relay), postgres.store, postgres.cursors, relay, 0, options=options
        )
        while await runner.step():
            pass

        async def all_received() -> bool:
            return len(subscriber.received) >= 5 + 12

        await eventually(all_received, timeout=10)
    received = subscriber.received
    assert len(received) == 17
    first, again = received[:5], received[5:10]
    # The stopped batch came again, message for message: same ids, same bodies, same headers.
    assert again == first
    log = {str(logged.event_id): logged for logged in await postgres.store.read_log(0, 0, 100)}
    assert sorted({m.message_id for m in received}) == sorted(log)
    for message in received:
        assert_is_relayed(message, log[message.message_id])
    # Each pass is in per-entity order; de-duplicated by message_id, so is the whole.
    unique: dict[str, Received] = {}
    for message in received:
        unique.setdefault(message.message_id, message)  # dicts keep the first one's place
    for versions in versions_by_entity(list(unique.values())).values():
        assert versions == list(range(1, 7))
    for versions in versions_by_entity(received[5:]).values():
        assert versions == list(range(1, 7))


def test_any_event_declares_every_event_class_of_the_app() -> None:
    relay = EventRelay()
    app = App([tally.Tally], projections=[relay])
    assert app.projection("event_relay") is relay
    assert relay.handles(tally.Added(1))
    assert relay.handles(tally.Noted("n"))
    assert issubclass(tally.Noted, relay.events)


def test_another_projection_still_may_not_declare_foreign_events() -> None:
    class Stray:
        pass

    class Bad(Projection):
        name = "bad"
        events = (AnyEvent, Stray)

        async def apply(self, event: Any, context: ProjectionContext) -> None: ...

    with pytest.raises(DefinitionError, match="Stray"):
        App([tally.Tally], projections=[Bad()])


async def test_a_relay_no_app_registered_refuses_to_publish() -> None:
    context = ProjectionContext(
        "tally", uuid.uuid4(), 1, uuid.uuid4(), 0, 1, datetime.now().astimezone()
    )
    with pytest.raises(PachydermError, match="App has registered"):
        await EventRelay().apply_many([(tally.Added(1), context)])


class SlowRelay(EventRelay):
    """The relay, each batch taking ``RELAY_BATCH_DELAY`` seconds more once confirmed (so a
    test can kill its process between a confirm and the cursor's advance)."""

    async def apply_many(self, batch: Any) -> None:
        await super().apply_many(batch)
        await asyncio.sleep(float(os.environ.get("RELAY_BATCH_DELAY", "0")))


# For the command line (tests.projections.test_relay:RELAY_APP).
RELAY_APP = tally.app(SlowRelay())


@contextlib.contextmanager
def relay_process(
    dsn: str, amqp_url: str, namespace: str, delay: float, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``pachyderm projections`` of an app with the relay, configured as a deployment is;
    its standard error goes to ``log`` (shown when the test fails)."""
    env = {
        **os.environ,
        "PACHYDERM_DATABASE_URL": dsn,
        "PACHYDERM_AMQP_URL": amqp_url,
        "PACHYDERM_NAMESPACE": namespace,
        "PACHYDERM_PARTITIONS": str(PARTITIONS),
        "PACHYDERM_HEALTH_PORT": "0",
        "RELAY_BATCH_DELAY": str(delay),
    }
    command = [sys.executable, "-m", "pachyderm", "projections", f"{__name__}:RELAY_APP"]
    # Leaving the Popen waits for the process; kill() does nothing to one that exited.
    with (
        log.open("ab") as stderr,
        subprocess.Popen(command, cwd=ROOT, env=env, stderr=stderr) as process,
    ):
        try:
            yield process
        finally:
            process.kill()


async def eventually_or_show(condition: Callable[[], Awaitable[bool]], log: Path) -> None:
    """:func:`eventually` within 30 s, failing with what the relay processes printed."""
    try:
        await eventually(condition, timeout=30)
    except AssertionError as missed:
        printed = await asyncio.to_thread(log.read_text)
        raise AssertionError(f"{missed}; the processes printed:\n{printed}") from None


def in_per_entity_order(received: list[Received]) -> bool:
    """Whether no version of an entity arrived before the one before it had."""
    arrived: set[tuple[str, int]] = set()
    for message in received:
        entity, version = (
            message.headers["pachyderm-entity-id"],
            message.headers["pachyderm-version"],
        )
        if version > 1 and (entity, version - 1) not in arrived:
            return False
        arrived.add((entity, version))
    return True


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_a_sigkilled_relay_process_loses_nothing_and_repeats_under_the_same_ids(
    postgres: Backend, subscriber: Subscriber, postgres_dsn: str, namespace: str, tmp_path: Path
) -> None:
    # 600 events a partition: two batches of the process's (500 at most).
    await write_tallies(postgres, RELAY_APP, entities=40, each=60)
    log = {str(logged.event_id): logged for logged in await stored(postgres)}
    assert len(log) == 2400

    async def positions() -> int:
        return sum(c.position for c in await postgres.cursors.cursors("event_relay"))

    printed = tmp_path / "relay.log"
    # A batch waits 2 s between its confirms and its cursor's advance: a window the test
    # cannot miss on a loaded machine (a partition's second batch is published, not advanced).
    with relay_process(postgres_dsn, subscriber.url, namespace, 2.0, printed) as first:

        async def some_relayed() -> bool:
            # Some batches advanced, and others received but not advanced (in the delay).
            moved = await positions()
            return moved > 0 and len(subscriber.received) > moved

        await eventually_or_show(some_relayed, printed)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert 0 < await positions() < len(log)
    with relay_process(postgres_dsn, subscriber.url, namespace, 0, printed) as second:

        async def caught_up() -> bool:
            return await positions() == len(log)

        await eventually_or_show(caught_up, printed)
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0

    async def all_received() -> bool:  # confirmed by the broker, maybe not yet delivered
        return {m.message_id for m in subscriber.received} == set(log)

    await eventually(all_received, timeout=10)
    received = subscriber.received
    first_of: dict[str, Received] = {}
    for message in received:
        # A duplicate is the same message again: same id, body, headers, routing key.
        assert first_of.setdefault(message.message_id, message) == message
        assert_is_relayed(message, log[message.message_id])
    assert set(first_of) == set(log)
    assert len(received) > len(log)  # the killed process's unconfirmed-to-the-cursor batches
    assert in_per_entity_order(received)


@dataclass
class BlockedChannel:
    """What :func:`publish_confirmed` uses of an aiormq channel, with a write queue that is
    full (a connection that cannot write)."""

    lock: asyncio.Lock
    write_queue: asyncio.Queue[object]
    delivery_tag: int = 7
    number: int = 1
    max_content_size: int = 1000
    confirmations: dict[int, asyncio.Future[Any]] = field(default_factory=dict)

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()


async def test_a_batch_cancelled_before_it_is_written_gives_its_delivery_tags_back() -> None:
    full: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
    full.put_nowait("a frame that is never taken")
    channel = BlockedChannel(asyncio.Lock(), full)
    messages = [Message(b"\x80", f"tally.Added{n}") for n in range(3)]
    task = asyncio.create_task(
        publish_confirmed(cast(aiormq.Channel, channel), "ns.events", messages)
    )

    async def waiting_to_write() -> bool:
        return channel.delivery_tag == 10

    await eventually(waiting_to_write)
    assert sorted(channel.confirmations) == [8, 9, 10]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The broker never saw them: its next confirm (tag 8) must find the next publish.
    assert channel.delivery_tag == 7
    assert channel.confirmations == {}
    assert not channel.lock.locked()
