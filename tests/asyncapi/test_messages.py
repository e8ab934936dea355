"""The messages the fleet sends and accepts are the document's messages.

Each is built by the product's own code, the way the client, the worker and
the outbox build it (with their trace context and publish time when
telemetry is on), then its body is decoded and its headers are checked
against the document's message schemas (document.py: mismatches).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from examples import bank, counter
from examples.demo import APP
from pachyderm import InvalidInputError, PachydermError, Reject
from pachyderm import _codec as codec
from pachyderm import _wire as wire
from pachyderm._errors import HandlerError
from pachyderm._execution import execute
from pachyderm._repartition import fence_message
from pachyderm.store import OutboxEntry
from pachyderm.telemetry import Telemetry, TelemetryHooks, install_telemetry
from pachyderm.telemetry._messaging import publishing
from pachyderm.transport import Message
from pachyderm.transport._reply_bundles import bundled, bundling_address, unbundled

from .document import Json, content_type, declared_headers, document, mismatches

COMMANDS, EFFECTS = "pachyderm.commands", "pachyderm.effects"
ALICE, BOB = bank.account("alice"), bank.account("bob")


@pytest.fixture(params=[False, True], ids=["untraced", "traced"])
def telemetry(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Without telemetry, and with tracing and metrics on as in a deployed process."""
    if not request.param:
        yield False
        return
    providers = Telemetry(TracerProvider(), MeterProvider())
    install_telemetry(providers)
    try:
        yield True
    finally:
        install_telemetry(Telemetry())
        providers.shutdown()


@pytest.fixture
def spec() -> Json:
    return document()


def published(exchange: str, message: Message) -> Message:
    """``message`` as the client publishes it: with the headers telemetry adds."""
    with publishing(exchange, message) as sent:
        return sent


def assert_is(spec: Json, name: str, message: Message) -> None:
    assert message.content_type == content_type(spec, name)
    problems = mismatches(
        spec,
        name,
        body=message.body,
        content_type=message.content_type,
        headers=message.headers,
    )
    assert problems == []


def reply_problems(spec: Json, reply: Message) -> list[str]:
    """How a reply, in either content type, differs from the document's."""
    return mismatches(
        spec, "Reply", body=reply.body, content_type=reply.content_type, headers=reply.headers
    )


def commands() -> list[Message]:
    return [
        wire.command_message(APP, counter.Counter.ref("c"), counter.Increment(amount=3)),
        wire.command_message(APP, ALICE, bank.Open(owner="Alice"), command_id="open-alice"),
        wire.command_message(APP, ALICE, bank.Transfer(to=BOB.id, amount=5)),
        wire.named_message(BOB, "Deposit", {"amount": 7}, command_id="d-1"),
    ]


def test_commands_are_the_document_s_commands_and_the_worker_takes_them(
    spec: Json, telemetry: bool
) -> None:
    for built in commands():
        message = published(COMMANDS, built)
        assert_is(spec, "Command", message)
        assert message.message_id, "the command id"
        assert wire.parse_request(APP, message).command_id == message.message_id
        if telemetry:
            assert {"traceparent", "pachyderm-sent-at"} <= set(message.headers)


def test_queries_are_the_document_s_queries_and_the_worker_takes_them(
    spec: Json, telemetry: bool
) -> None:
    message = published(COMMANDS, wire.command_message(APP, ALICE, None, kind=wire.QUERY))
    assert_is(spec, "Query", message)
    assert wire.parse_request(APP, message).kind == wire.QUERY


def test_a_json_command_written_from_the_document_is_taken(spec: Json) -> None:
    headers = {"pachyderm-entity-type": "account", "pachyderm-kind": "command"}
    body = json.dumps({"owner": "Bob"}).encode()
    assert mismatches(spec, "Command", body=body, content_type=codec.JSON, headers=headers) == []
    message = Message(
        body, str(BOB.id), "open-bob", content_type=codec.JSON, type="Open", headers=headers
    )
    assert wire.parse_request(APP, message).message == bank.Open(owner="Bob")


def _outbox(command: Message, state_events: list[Any], ref: Any) -> list[OutboxEntry]:
    """The outbox rows the worker commits for ``command``: executed for real."""
    request = wire.parse_request(APP, command)
    entity_type = request.entity_type
    state = entity_type.evolve(entity_type.entity.init(), state_events)
    done = execute(
        entity_type,
        ref,
        state,
        len(state_events),
        request.message,
        command_id=request.command_id,
        entity_types=APP.entity_type,
    )
    now = datetime.datetime.now(datetime.UTC)
    return [
        OutboxEntry(
            effect.effect_id,
            effect.destination,
            effect.payload,
            ref.id,
            request.command_id,
            now,
            trace=request.trace,
        )
        for effect in done.change.effects
    ]


def _effects(telemetry: bool) -> list[tuple[str, Message]]:
    crossing = published(
        COMMANDS, wire.command_message(APP, counter.Counter.ref("c"), counter.Increment(amount=12))
    )
    transfer = published(
        COMMANDS, wire.command_message(APP, ALICE, bank.Transfer(to=BOB.id, amount=5))
    )
    entries = _outbox(crossing, [], counter.Counter.ref("c"))
    entries += _outbox(transfer, [bank.Opened(owner="Alice"), bank.Deposited(amount=9)], ALICE)
    sent = []
    for entry in entries:
        kind, message = wire.effect_message(entry)
        exchange = COMMANDS if kind == wire.COMMAND else EFFECTS
        # As the outbox sweep publishes it: continuing its command's trace.
        with TelemetryHooks().publishing(exchange, message, entry, None) as traced:
            sent.append((kind, traced))
    assert [kind for kind, _ in sent] == ["effect", wire.COMMAND]
    if telemetry:
        assert all("traceparent" in message.headers for _, message in sent)
    return sent


def test_effects_are_the_document_s_effects_and_commands(spec: Json, telemetry: bool) -> None:
    (_, effect), (_, credit) = _effects(telemetry)
    assert_is(spec, "Effect", effect)
    assert effect.message_id == effect.headers["pachyderm-effect-id"]
    assert effect.type == "admin_mailer"
    # A Send is a command to the other entity, with the ids of where it came from.
    assert_is(spec, "Command", credit)
    assert wire.parse_request(APP, credit).message == bank.CreditTransfer(source=ALICE.id, amount=5)
    assert {"pachyderm-effect-id", "pachyderm-source-entity-id"} <= set(credit.headers)


def _invalid_inputs() -> list[InvalidInputError]:
    """What the worker finds wrong with bad commands, found by its own parser."""
    good = wire.command_message(APP, ALICE, bank.Deposit(amount=1))
    bad = [
        replace(good, type="Steal"),
        replace(good, body=codec.encode({"amount": -1})),
        replace(good, routing_key=str(ALICE.id).upper()),
        replace(good, headers={**good.headers, "pachyderm-entity-type": "counter"}),
        replace(good, body=b"{", content_type=codec.JSON),
    ]
    errors = []
    for message in bad:
        with pytest.raises(InvalidInputError) as raised:
            wire.parse_request(APP, message)
        errors.append(raised.value)
    return errors


def _replies(request: Message) -> list[Message]:
    errors: list[PachydermError] = [*_invalid_inputs(), HandlerError("the entity's code raised")]
    return [
        wire.ok_reply(request, 3, {"owner": "Alice", "balance": 9}),
        wire.rejected_reply(request, Reject("insufficient_funds", {"balance": 9})),
        wire.rejected_reply(request, Reject("not_open")),
        *(wire.error_reply(request, error) for error in errors),
    ]


def test_replies_are_the_document_s_replies(spec: Json) -> None:
    request = replace(commands()[1], reply_to="amq.gen-caller", correlation_id="corr-1")
    replies = _replies(request)
    statuses = {codec.decode(reply.body)["status"] for reply in replies}
    assert statuses == {"ok", "rejected", "invalid", "failed"}
    for reply in replies:
        assert_is(spec, "Reply", reply)
        assert reply.correlation_id == "corr-1"


def test_replies_bundled_for_one_caller_are_the_document_s_bundle(spec: Json) -> None:
    address = bundling_address("pachyderm", "caller")
    request = replace(commands()[1], reply_to=address, correlation_id="corr-1")
    json_request = replace(request, body=b'{"owner": "Alice"}', content_type=codec.JSON)
    replies = [*_replies(request), *_replies(json_request)]
    [bundle] = bundled("pachyderm", replies)
    assert bundle.content_type == content_type(spec, "ReplyBundle")
    # Its body is msgpack; its content type names the bundle, not the codec.
    assert mismatches(spec, "ReplyBundle", body=bundle.body, content_type=None, headers={}) == []
    for reply in unbundled(bundle):
        assert reply_problems(spec, reply) == []
    assert list(unbundled(bundle)) == replies


def test_a_json_request_gets_a_json_reply_the_document_describes(spec: Json) -> None:
    request = replace(
        commands()[1],
        body=json.dumps({"owner": "Alice"}).encode(),
        content_type=codec.JSON,
        reply_to="amq.gen-caller",
    )
    for reply in _replies(request):
        assert reply.content_type == codec.JSON
        assert reply_problems(spec, reply) == []


def test_the_check_catches_messages_the_document_does_not_describe(spec: Json) -> None:
    reply = wire.ok_reply(replace(commands()[0], reply_to="r"), 1, {"count": 1})
    no_status = codec.encode({"version": 1})
    assert mismatches(spec, "Reply", body=no_status, content_type=None, headers={})
    headers = {**reply.headers, "pachyderm-status": "fine"}
    assert mismatches(spec, "Reply", body=reply.body, content_type=None, headers=headers)
    assert mismatches(spec, "Reply", body=reply.body, content_type=None, headers={"x-new": "1"})
    effect_headers = {"pachyderm-effect-id": "not-a-uuid"}
    assert mismatches(
        spec, "Effect", body=codec.encode(1), content_type=None, headers=effect_headers
    )
    assert "traceparent" in declared_headers(spec, "Effect")
    assert mismatches(spec, "Command", body=codec.encode([1]), content_type=None, headers={})


def test_a_repartition_fence_is_the_document_s_fence_and_is_answered_invalid(
    spec: Json,
) -> None:
    built = fence_message("fence-3-abc", "amq.gen-repartition")
    fence = Message(
        built.body,
        routing_key="3f2504e0-4f89-11d3-9a0c-0305e82c3301",  # the worker reads no entity
        message_id=built.message_id,
        reply_to=built.reply_to,
        content_type=built.content_type,
        headers=dict(built.headers or {}),
    )
    assert_is(spec, "Fence", fence)
    with pytest.raises(InvalidInputError) as refused:
        wire.parse_request(APP, fence)
    reply = wire.error_reply(fence, refused.value)
    body, content_type, headers = reply.body, reply.content_type, reply.headers
    assert mismatches(spec, "Reply", body=body, content_type=content_type, headers=headers) == []
    assert codec.decode(reply.body, reply.content_type)["status"] == "invalid"
    assert reply.correlation_id == "fence-3-abc"  # what the tool waits for
    channel = spec["channels"]["pachyderm.commands.{partition}"]
    assert channel["publish"]["message"] == {"$ref": "#/components/messages/Fence"}
