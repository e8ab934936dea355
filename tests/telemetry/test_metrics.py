"""The metrics move as the fleet works: outcomes, conflicts, latencies, batches, outbox,
partitions and cache."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from examples import bank, counter
from pachyderm import App, EffectHandler, HandlerError, InvalidInputError, Ref, RejectedError
from pachyderm import _codec as codec
from pachyderm._dispatcher import EffectDispatcher
from pachyderm._embedded import EmbeddedFleet, embedded
from pachyderm._wire import COMMAND, ENTITY_TYPE_HEADER, Request, command_message
from pachyderm.store import EventStore, open_store
from pachyderm.telemetry import Telemetry, TelemetryHooks, install_telemetry
from pachyderm.transport import InProcessTransport, Message, Topology
from pachyderm.worker import EffectPublisher, Engine, PartitionWorker

from ..waiting import eventually
from .conftest import Mailer, Recorded, points


class Broken(counter.Counter):
    type_name = "broken"

    def handle(self, message: Any, state: dict[str, int]) -> Any:
        if message.amount == 13:
            raise ValueError("unlucky")
        return super().handle(message, state)


APP = App([counter.Counter, bank.Account, Broken], effect_handlers=[counter.AdminMailer()])


@pytest.fixture
async def fleet(recorded: Recorded) -> AsyncIterator[EmbeddedFleet]:
    async with embedded(APP) as fleet:
        yield fleet


@pytest.fixture
async def store() -> AsyncIterator[EventStore]:
    store = await open_store("sqlite:///:memory:")
    await store.migrate()
    yield store
    await store.close()


def request(ref: Ref, message: Any) -> Request:
    return Request(ref, APP.entity_type(ref.type), message, str(uuid.uuid4()), COMMAND)


async def test_commands_are_counted_and_timed_by_outcome(
    fleet: EmbeddedFleet, recorded: Recorded
) -> None:
    client, alice = fleet.client, bank.account("alice")
    await client.call(alice, bank.Open(owner="alice"))
    await client.call(alice, bank.Deposit(amount=5), command_id="again")
    await client.call(alice, bank.Deposit(amount=5), command_id="again")
    with pytest.raises(RejectedError):
        await client.call(alice, bank.Withdraw(amount=100))
    with pytest.raises(InvalidInputError):
        await client.call_named(alice, "Steal", {})
    with pytest.raises(HandlerError):
        await client.call(Ref.from_key("broken", "b"), counter.Increment(amount=13))
    await client.query(alice)

    def commands(outcome: str, kind: str = "command", entity_type: str = "account") -> float:
        return recorded.total(
            "pachyderm.commands", outcome=outcome, kind=kind, entity_type=entity_type
        )

    assert commands("ok") == 2
    assert commands("duplicate") == 1
    assert commands("rejected") == 1
    assert commands("failed", entity_type="broken") == 1
    assert commands("ok", kind="query") == 1
    # The type of what could not be read is no label: its value would be anyone's.
    [invalid] = recorded.points("pachyderm.commands", outcome="invalid")
    assert (dict(invalid.attributes), invalid.value) == (
        {"outcome": "invalid", "kind": "command"},
        1,
    )
    assert recorded.total("pachyderm.commands") == 7
    assert recorded.count("pachyderm.command.duration") == 7
    assert recorded.count("pachyderm.batch.size") == 7
    # Open, the deposit, its repetition (refused by the store as a duplicate) and
    # the rejection (recorded with its command id).
    assert recorded.count("pachyderm.commit.duration") == 4


async def test_latency_runs_from_the_publish_time_a_message_carries(
    fleet: EmbeddedFleet, recorded: Recorded
) -> None:
    replies: asyncio.Queue[Message] = asyncio.Queue()
    address = await fleet.transport.listen_replies(replies.put)
    five_seconds_ago = time.time_ns() // 1_000_000 - 5000
    await fleet.transport.publish_command(
        Message(
            b"\x81\xa5owner\xa1x",  # msgpack: {"owner": "x"}
            routing_key=str(bank.account("x").id),
            message_id="late",
            reply_to=address,
            type="Open",
            headers={ENTITY_TYPE_HEADER: "account", "pachyderm-sent-at": five_seconds_ago},
        )
    )
    await asyncio.wait_for(replies.get(), 2)
    [point] = recorded.points("pachyderm.command.duration")
    assert 5 <= point.sum < 10


async def test_partitions_owned_and_entities_cached_are_observed_while_a_worker_runs(
    recorded: Recorded,
) -> None:
    async with embedded(APP, partitions=3) as fleet:
        for key in ("a", "b"):
            await fleet.client.call(counter.Counter.ref(key), counter.Increment())
        assert recorded.total("pachyderm.partitions.owned") == 3
        assert recorded.total("pachyderm.entities.cached") == 2
    assert recorded.points("pachyderm.partitions.owned") == []


async def test_effects_are_timed_from_commit_to_publish_by_source(
    fleet: EmbeddedFleet, recorded: Recorded
) -> None:
    await fleet.client.call(counter.Counter.ref("c"), counter.Increment(amount=11))

    async def published() -> bool:  # after the reply
        return bool(recorded.points("pachyderm.outbox.lag"))

    await eventually(published)
    [lag] = recorded.points("pachyderm.outbox.lag")
    assert (dict(lag.attributes), lag.count) == ({"source": "commit"}, 1)
    assert 0 <= lag.sum < 1


async def test_effects_published_by_the_sweep_are_timed_as_such(
    store: EventStore, recorded: Recorded
) -> None:
    # Committed, never published: what a crash between commit and publish leaves.
    await Engine(APP, store).run([request(counter.Counter.ref("c"), counter.Increment(amount=11))])
    transport = InProcessTransport(Topology())
    await transport.start()

    async def ignore(message: Message) -> None:
        pass

    await transport.consume_effects("handlers", ["effect.#"], ignore)
    try:
        publisher = EffectPublisher(store, transport, grace=0, hooks=TelemetryHooks())
        assert await publisher.sweep_once() == 1
    finally:
        await transport.close()
    assert recorded.count("pachyderm.outbox.lag", source="sweep") == 1


async def test_a_commit_refused_because_the_entity_moved_on_counts_a_conflict(
    store: EventStore, recorded: Recorded
) -> None:
    ref = counter.Counter.ref("raced")
    stale, other = Engine(APP, store, hooks=TelemetryHooks()), Engine(APP, store)
    await stale.run([request(ref, counter.Increment())])
    await other.run([request(ref, counter.Increment())])
    assert recorded.total("pachyderm.conflicts") == 0
    results, _ = await stale.run([request(ref, counter.Increment())])  # on a stale cache
    assert results[0].reply == {"count": 3}
    assert recorded.total("pachyderm.conflicts", entity_type="counter") == 1


async def test_with_metrics_only_a_batch_of_many_publishes_its_effects(mailer: Mailer) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader])
    install_telemetry(Telemetry(meter_provider=provider))
    try:
        async with embedded(App([counter.Counter], effect_handlers=[mailer])) as fleet:
            ref = counter.Counter.ref("batched")
            # Published without yielding to the worker in between: it takes them as one batch.
            for amount in (3, 4, 5):
                await fleet.client.send(ref, counter.Increment(amount=amount))

            async def mailed() -> bool:
                return bool(mailer.sent)

            await eventually(mailed)
        [batches] = points(reader, "pachyderm.batch.size")
        assert (batches.count, batches.max) == (1, 3)
    finally:
        install_telemetry(Telemetry())
        provider.shutdown()


async def test_a_dispatcher_counts_the_effects_that_waited_for_its_handler(
    recorded: Recorded, caplog: pytest.LogCaptureFixture
) -> None:
    transport = InProcessTransport(Topology())
    await transport.start()
    dispatched: list[Any] = []

    class Late(EffectHandler):
        name = "late"

        def dispatch(self, payload: Any, config: Any) -> None:
            dispatched.append(payload)

    dispatcher = EffectDispatcher(transport, [Late()], reroute_interval=0.01)
    try:
        # Published before any dispatcher bound a queue for them.
        for key in ("effect.late", "effect.late", "effect.nobody"):
            sent = Message(codec.encode(key), routing_key=key, message_id=str(uuid.uuid4()))
            await transport.publish_effect(sent)
        await dispatcher.start()

        async def both_dispatched() -> bool:
            return len(dispatched) == 2

        await eventually(both_dispatched)
        assert recorded.total("pachyderm.effects.routed_again") == 2
        assert recorded.total("pachyderm.effects.unrouted") == 1
        assert "1 effects wait in pachyderm.effects-unrouted" in caplog.text
    finally:
        await dispatcher.stop()
        await transport.close()


async def test_a_batchs_size_and_commit_time_are_recorded_after_its_replies(
    store: EventStore, recorded: Recorded
) -> None:
    # A histogram record costs some 20 us: none runs between a commit and its reply.
    transport = InProcessTransport(Topology(partitions=1))
    await transport.start()
    hooks = TelemetryHooks()
    engine = Engine(APP, store, hooks=hooks)
    inbox = await transport.open_inbox(0, prefetch=10)
    partition = PartitionWorker(
        inbox, APP, engine, transport, EffectPublisher(store, transport, hooks=hooks), hooks=hooks
    )
    address = await transport.listen_replies(_ignored)
    at_reply: list[tuple[int, int]] = []
    replying = transport.publish_replies

    async def publish_replies(messages: Sequence[Message]) -> None:
        at_reply.append(
            (recorded.count("pachyderm.batch.size"), recorded.count("pachyderm.commit.duration"))
        )
        await replying(messages)

    transport.publish_replies = publish_replies  # type: ignore[method-assign]
    try:
        message = command_message(APP, counter.Counter.ref("c"), counter.Increment(amount=1))
        await transport.publish_command(replace(message, reply_to=address, correlation_id="1"))
        await partition.handle(await inbox.take(1))
    finally:
        await transport.close()
    assert at_reply == [(0, 0)]
    assert recorded.count("pachyderm.batch.size") == 1
    assert recorded.count("pachyderm.commit.duration") == 1


async def _ignored(_message: Message) -> None:
    return None
