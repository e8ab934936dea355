"""Effects over RabbitMQ: published after the commit with their ids, recovered from
the outbox after a crash, and dispatched by `pachyderm effects`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import pytest

from examples import counter
from examples.demo import APP
from pachyderm import Send
from pachyderm import _codec as codec
from pachyderm._execution import encode_effect
from pachyderm.store import Change, NewEffect, NewEvent, PostgresEventStore

from ..waiting import eventually
from . import effect_context_app
from .harness import ROOT, Fleet, fleet

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture
async def running(
    tmp_path: Path, namespace: str, postgres_dsn: str, rabbitmq_url: str
) -> AsyncIterator[Fleet]:
    async with fleet(tmp_path, namespace, postgres_dsn, rabbitmq_url, partitions=4) as started:
        yield started


@pytest.fixture
async def effects_seen(
    running: Fleet, rabbitmq_url: str
) -> AsyncIterator[asyncio.Queue[aio_pika.abc.AbstractIncomingMessage]]:
    """Everything published to the effects exchange, seen by a plain AMQP consumer."""
    seen: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(running.topology.effects_exchange, routing_key="effect.#")
        await queue.consume(seen.put, no_ack=True)
        yield seen


async def test_an_effect_is_published_after_its_commit_with_its_ids(
    running: Fleet, effects_seen: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage]
) -> None:
    running.start_worker("w1")
    await running.balanced()
    ref = counter.Counter.ref("visits")
    async with running.client() as client:
        await client.call(ref, counter.Increment(amount=4), command_id="below")
        await client.call(ref, counter.Increment(amount=7), command_id="crossing")
    message = await asyncio.wait_for(effects_seen.get(), 5)
    assert message.routing_key == "effect.admin_mailer"
    assert codec.decode(message.body) == {"threshold": 10}
    assert message.headers["pachyderm-source-entity-id"] == str(ref.id)
    assert message.headers["pachyderm-source-command-id"] == "crossing"
    assert message.message_id == message.headers["pachyderm-effect-id"]
    assert effects_seen.empty()


async def test_effects_a_crash_left_in_the_outbox_are_published_by_a_survivor(
    running: Fleet,
    effects_seen: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage],
    postgres_dsn: str,
) -> None:
    # A worker committed, then died before publishing: the outbox alone knows.
    store = await PostgresEventStore.connect(postgres_dsn, schema=running.topology.namespace)
    effect_id = uuid.uuid4()
    orphan = NewEffect(effect_id, "effect.admin_mailer", codec.encode({"threshold": 10}))
    change = Change(
        counter.Counter.ref("orphan"),
        0,
        "lost-command",
        [NewEvent("Increased", codec.encode({"amount": 12}))],
        b"",
        [orphan],
    )
    await store.commit([change])
    running.start_worker("survivor", effects_grace="0.2")
    message = await asyncio.wait_for(effects_seen.get(), 10)
    assert message.message_id == str(effect_id)

    async def marked_published() -> bool:
        return await store.pending_effects() == []

    await eventually(marked_published, timeout=5)
    await store.close()


UNROUTED = 600  # more than a sweep reads at once (500)


async def test_effects_no_handler_takes_yet_wait_without_blocking_the_outbox(
    running: Fleet, tmp_path: Path, postgres_dsn: str, rabbitmq_url: str
) -> None:
    # A crash left in the outbox hundreds of effects for a handler no dispatcher has
    # bound a queue for yet, and behind them a Send to another entity.
    store = await PostgresEventStore.connect(postgres_dsn, schema=running.topology.namespace)
    mail = [
        NewEffect(uuid.uuid4(), "effect.admin_mailer", codec.encode({"threshold": n}))
        for n in range(UNROUTED)
    ]
    target = counter.Counter.ref("credited")
    send = encode_effect(
        APP.entity_type("counter"),
        Send(target, counter.Increment(amount=5)),
        uuid.uuid4(),
        entity_types=APP.entity_type,
    )
    source = counter.Counter.ref("source")
    added = [NewEvent("Increased", codec.encode({"amount": 1}))]
    await store.commit([Change(source, 0, "crashed", added, b"", [*mail, send])])
    running.start_worker("survivor", effects_grace="0.2")
    await running.balanced()
    async with running.client() as client:

        async def credited() -> bool:
            state: object = await client.query(target)
            return state == {"count": 5}

        await eventually(credited, timeout=15)

    async def swept() -> bool:
        return await store.pending_effects() == []

    await eventually(swept, timeout=10)
    await store.close()
    # On the wire: the broker keeps them for their handler.
    assert await queue_length(rabbitmq_url, running.topology.unrouted_effects_queue) == UNROUTED
    # Once a dispatcher for their handler starts, every one of them is dispatched.
    record = tmp_path / "mail.jsonl"
    async with dispatching(running, record, rabbitmq_url):

        async def all_dispatched() -> bool:
            return record.exists() and len(record.read_text().splitlines()) >= UNROUTED

        await eventually(all_dispatched, timeout=30, interval=0.1)
    thresholds = sorted(json.loads(line)["threshold"] for line in record.read_text().splitlines())
    assert thresholds == list(range(UNROUTED))
    assert await queue_length(rabbitmq_url, running.topology.unrouted_effects_queue) == 0


async def queue_length(url: str, name: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return queue.declaration_result.message_count or 0


async def start_dispatcher(
    running: Fleet, record: Path, rabbitmq_url: str, app: str = "tests.integration.effect_app"
) -> asyncio.subprocess.Process:
    """A `pachyderm effects` process for ``app``, whose handlers write to ``record``."""
    environment = {
        **os.environ,
        "PACHYDERM_AMQP_URL": rabbitmq_url,
        "PACHYDERM_NAMESPACE": running.topology.namespace,
        "PACHYDERM_PARTITIONS": str(running.topology.partitions),
        "PACHYDERM_HEALTH_PORT": "0",  # beside the workers, whose ports are their own
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pachyderm",
        "effects",
        app,
        "--config",
        json.dumps({"path": str(record)}),
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@asynccontextmanager
async def dispatching(
    running: Fleet, record: Path, rabbitmq_url: str, app: str = "tests.integration.effect_app"
) -> AsyncIterator[None]:
    """`pachyderm effects` for ``app`` while the block runs, writing to ``record``."""
    dispatcher = await start_dispatcher(running, record, rabbitmq_url, app)
    try:
        yield
    finally:
        dispatcher.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(dispatcher.wait(), 10) == 0
        await delete_queue(rabbitmq_url, running.topology.effects_queue("handlers"))


async def test_pachyderm_effects_dispatches_to_the_module_handlers(
    running: Fleet, tmp_path: Path, rabbitmq_url: str
) -> None:
    running.start_worker("w1")
    await running.balanced()
    record = tmp_path / "mail.jsonl"
    async with dispatching(running, record, rabbitmq_url):
        await asyncio.sleep(2)  # let it bind its queue before the effect goes out
        async with running.client() as client:
            await client.call(counter.Counter.ref("c"), counter.Increment(amount=11))

        async def dispatched() -> bool:
            return record.exists() and record.read_text().strip() != ""

        await eventually(dispatched, timeout=10, interval=0.05)
    assert [json.loads(line) for line in record.read_text().splitlines()] == [{"threshold": 10}]


async def consumed(url: str, name: str) -> bool:
    """Whether queue ``name`` exists and has a consumer."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return bool(queue.declaration_result.consumer_count)


async def delete_queue(url: str, name: str) -> None:
    """The dispatcher's durable queue outlives it: remove it with the namespace."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


async def test_a_handler_knows_its_effect_and_its_attempt_after_a_dispatcher_died(
    running: Fleet,
    effects_seen: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage],
    tmp_path: Path,
    rabbitmq_url: str,
) -> None:
    # Retries of failed handlers are issue 16's: here the dispatcher dies mid-dispatch.
    running.start_worker("w1")
    await running.balanced()
    record = tmp_path / "effects.jsonl"
    app = "tests.integration.effect_context_app"
    ref = counter.Counter.ref("c")
    handlers_queue = running.topology.effects_queue("handlers")
    first = await start_dispatcher(running, record, rabbitmq_url, app)
    try:
        # Once its queue is bound, as effects_seen's is, the effect goes to both.
        await eventually(lambda: consumed(rabbitmq_url, handlers_queue), timeout=15, interval=0.2)
        async with running.client() as client:
            await client.call(ref, counter.Increment(amount=11), command_id="crossing")
        assert await asyncio.wait_for(first.wait(), 20) == effect_context_app.DIED
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    published = await asyncio.wait_for(effects_seen.get(), 5)
    async with dispatching(running, record, rabbitmq_url, app):

        async def redelivered() -> bool:
            return len(record.read_text().splitlines()) >= 2

        await eventually(redelivered, timeout=15, interval=0.05)
    seen = [json.loads(line) for line in record.read_text().splitlines()]
    assert published.message_id == str(uuid.uuid5(ref.id, "crossing/0"))
    assert seen == [
        {
            "effect_id": published.message_id,
            "attempt": attempt,
            "handler": "admin_mailer",
            "source_entity_id": str(ref.id),
            "source_command_id": "crossing",
        }
        for attempt in (1, 2)
    ]
