"""Traces across the whole path, on the embedded fleet: client publish, worker batch
(load, handle, commit), effect publish, effect dispatch."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from examples import bank, counter
from pachyderm import App
from pachyderm._embedded import EmbeddedFleet, embedded
from pachyderm._wire import ENTITY_TYPE_HEADER, KIND_HEADER, Request
from pachyderm.store import open_store
from pachyderm.telemetry import TelemetryHooks
from pachyderm.telemetry._messaging import publishing
from pachyderm.transport import InProcessTransport, Message, Topology
from pachyderm.worker import EffectPublisher, Engine

from ..waiting import eventually
from .conftest import Mailer, Recorded

COMMANDS, EFFECTS = "pachyderm.commands", "pachyderm.effects"


@pytest.fixture
async def fleet(recorded: Recorded, mailer: Mailer) -> AsyncIterator[EmbeddedFleet]:
    async with embedded(App([counter.Counter, bank.Account], effect_handlers=[mailer])) as fleet:
        yield fleet


async def dispatched(recorded: Recorded) -> ReadableSpan:
    """The effect dispatch's span, once it and the batch that published it have ended
    (the dispatcher may handle the effect before the publishing batch is done)."""

    async def ended() -> bool:
        return all(recorded.named(f"process {name}") for name in (EFFECTS, COMMANDS))

    await eventually(ended)
    [span] = recorded.named(f"process {EFFECTS}")
    return span


def only(recorded: Recorded, name: str) -> ReadableSpan:
    [span] = recorded.named(name)
    return span


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def linked(span: ReadableSpan) -> list[int]:
    return [link.context.span_id for link in span.links]


async def test_a_call_crossing_ten_is_one_trace_from_caller_to_effect_handler(
    fleet: EmbeddedFleet, recorded: Recorded, mailer: Mailer
) -> None:
    ref = counter.Counter.ref("c")
    await fleet.client.call(ref, counter.Increment(amount=12))
    effect_process = await dispatched(recorded)
    assert mailer.sent == [{"threshold": 10}]

    spans = recorded.spans()
    assert sorted(span.name for span in spans) == sorted(
        [
            f"publish {COMMANDS}",
            f"process {COMMANDS}",
            "load",
            "handle",
            "commit",
            f"publish {EFFECTS}",
            f"process {EFFECTS}",
        ]
    )
    assert {span.context.trace_id for span in spans} == {spans[0].context.trace_id}
    assert all(str(ref.id) not in span.name for span in spans)

    publish = only(recorded, f"publish {COMMANDS}")
    process = only(recorded, f"process {COMMANDS}")
    effect_publish = only(recorded, f"publish {EFFECTS}")
    assert (publish.kind, process.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert publish.parent is None
    assert parent_id(process) == publish.context.span_id
    assert linked(process) == [publish.context.span_id]
    for child in ("load", "handle", "commit", f"publish {EFFECTS}"):
        assert parent_id(only(recorded, child)) == process.context.span_id, child
    assert parent_id(effect_process) == effect_publish.context.span_id
    assert (effect_publish.kind, effect_process.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)

    attributes = publish.attributes or {}
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.destination.name"] == COMMANDS
    assert attributes["messaging.operation.type"] == "send"
    assert attributes["messaging.rabbitmq.destination.routing_key"] == str(ref.id)
    assert attributes["pachyderm.entity.id"] == str(ref.id)
    assert attributes["pachyderm.entity.type"] == "counter"
    process_attributes = process.attributes or {}
    assert process_attributes["messaging.operation.type"] == "process"
    assert process_attributes["messaging.batch.message_count"] == 1
    assert process_attributes["pachyderm.outcome"] == "ok"
    assert process_attributes["messaging.message.id"] == attributes["messaging.message.id"]
    assert (only(recorded, "commit").attributes or {})["db.system.name"] == "sqlite"
    assert (effect_process.attributes or {})["messaging.consumer.group.name"] == "handlers"


async def test_a_batch_is_one_span_linking_its_messages_and_effects_continue_their_command(
    fleet: EmbeddedFleet, recorded: Recorded
) -> None:
    ref = counter.Counter.ref("batched")
    # Published without yielding to the worker in between: it takes them as one batch.
    for amount in (3, 4, 5):
        await fleet.client.send(ref, counter.Increment(amount=amount))
    await dispatched(recorded)

    publishes = recorded.named(f"publish {COMMANDS}")
    process = only(recorded, f"process {COMMANDS}")
    assert (process.attributes or {})["messaging.batch.message_count"] == 3
    assert process.parent is None  # a trace of its own...
    assert linked(process) == [span.context.span_id for span in publishes]  # ...linked to each
    for child in ("load", "handle", "commit"):
        assert parent_id(only(recorded, child)) == process.context.span_id

    # The third increment crossed 10: its effect continues that command's trace.
    crossing = publishes[2]
    effect_publish = only(recorded, f"publish {EFFECTS}")
    assert effect_publish.context.trace_id == crossing.context.trace_id
    assert parent_id(effect_publish) == crossing.context.span_id
    assert linked(effect_publish) == [process.context.span_id]
    assert only(recorded, f"process {EFFECTS}").context.trace_id == crossing.context.trace_id


async def raw_call(fleet: EmbeddedFleet, headers: Mapping[str, Any]) -> None:
    """Publish a query with these headers, as a client in another language would."""
    replies: asyncio.Queue[Message] = asyncio.Queue()
    address = await fleet.transport.listen_replies(replies.put)
    await fleet.transport.publish_command(
        Message(
            b"\x80",  # msgpack: {}
            routing_key=str(bank.account("x").id),
            message_id=str(uuid.uuid4()),
            reply_to=address,
            headers={ENTITY_TYPE_HEADER: "account", KIND_HEADER: "query", **headers},
        )
    )
    await asyncio.wait_for(replies.get(), 2)


async def test_a_foreign_callers_traceparent_is_continued(
    fleet: EmbeddedFleet, recorded: Recorded
) -> None:
    trace_id, span_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    await raw_call(fleet, {"traceparent": f"00-{trace_id}-{span_id}-01"})
    process = only(recorded, f"process {COMMANDS}")
    assert format(process.context.trace_id, "032x") == trace_id
    assert format(parent_id(process) or 0, "016x") == span_id


@pytest.mark.parametrize("traceparent", ["garbage", b"00-bytes", 42, None])
async def test_a_malformed_traceparent_starts_a_new_trace(
    fleet: EmbeddedFleet, recorded: Recorded, traceparent: Any
) -> None:
    await raw_call(fleet, {"traceparent": traceparent})
    process = only(recorded, f"process {COMMANDS}")
    assert process.parent is None
    assert process.links == ()


async def test_without_telemetry_publishing_leaves_messages_untouched() -> None:
    message = Message(b"", routing_key="r", headers={"a": "b"})
    with publishing(COMMANDS, message) as published:
        assert published is message


async def test_with_telemetry_messages_carry_their_trace_and_publish_time(
    recorded: Recorded,
) -> None:
    message = Message(b"", routing_key="r", headers={"a": "b"})
    with publishing(COMMANDS, message) as published:
        pass
    [span] = recorded.spans()
    trace_id, span_id = span.context.trace_id, span.context.span_id
    assert published.headers["traceparent"].startswith(f"00-{trace_id:032x}-{span_id:016x}-")
    assert isinstance(published.headers["pachyderm-sent-at"], int)
    assert published.headers["a"] == "b"
    assert message.headers == {"a": "b"}


async def test_an_effect_the_sweep_publishes_after_a_crash_continues_its_commands_trace(
    recorded: Recorded,
) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    traceparent = f"00-{trace_id}-b7ad6b7169203331-01"
    app = App([counter.Counter], effect_handlers=[counter.AdminMailer()])
    store = await open_store("sqlite:///:memory:")
    transport = InProcessTransport(Topology())
    try:
        await store.migrate()
        await transport.start()
        ref = counter.Counter.ref("crossing")
        crossing = Request(
            ref,
            app.entity_type("counter"),
            counter.Increment(amount=11),
            "traced-command",
            trace={"traceparent": traceparent},
        )
        # Committed, then the worker died before publishing: only the outbox knows.
        await Engine(app, store).run([crossing])
        publisher = EffectPublisher(store, transport, grace=0, hooks=TelemetryHooks())
        assert await publisher.sweep_once() == 1
    finally:
        await transport.close()
        await store.close()
    [published] = recorded.named(f"publish {EFFECTS}")
    assert f"{published.context.trace_id:032x}" == trace_id
    assert f"{parent_id(published):016x}" == "b7ad6b7169203331"
