"""The embedded fleet: the production worker, engine and client in one process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from examples import bank, counter
from pachyderm import (
    App,
    EffectContext,
    EffectHandler,
    EntityTypeMismatchError,
    InvalidInputError,
    InvalidMessageError,
    Ref,
    RejectedError,
    UnknownNameError,
    current_effect,
)
from pachyderm import _codec as codec
from pachyderm._embedded import EmbeddedFleet, embedded
from pachyderm._wire import ENTITY_TYPE_HEADER
from pachyderm.testing import assert_replay_matches
from pachyderm.transport import Message

from .waiting import eventually


class Recorder(EffectHandler):
    name = "admin_mailer"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []
        self.effects: list[EffectContext] = []

    async def dispatch(self, payload: Any, config: Mapping[str, Any]) -> None:
        self.calls.append((payload, dict(config)))
        self.effects.append(current_effect())


@pytest.fixture
def mailer() -> Recorder:
    return Recorder()


@pytest.fixture
async def fleet(mailer: Recorder) -> AsyncIterator[EmbeddedFleet]:
    app = App([counter.Counter, bank.Account], effect_handlers=[mailer])
    async with embedded(app, effects_config={"to": "ops"}) as fleet:
        yield fleet


async def test_calls_reply_with_the_new_state(fleet: EmbeddedFleet) -> None:
    ref = counter.Counter.ref("c")
    replies = [await fleet.client.call(ref, counter.Increment(amount=n)) for n in (1, 2, 3)]
    assert replies == [{"count": 1}, {"count": 3}, {"count": 6}]
    assert await fleet.client.query(ref) == {"count": 6}


async def test_a_retried_call_with_the_same_id_applies_once(fleet: EmbeddedFleet) -> None:
    ref = counter.Counter.ref("c")
    first = await fleet.client.call(ref, counter.Increment(amount=5), command_id="same")
    await fleet.client.call(ref, counter.Increment(amount=1))
    again = await fleet.client.call(ref, counter.Increment(amount=5), command_id="same")
    assert (first, again) == ({"count": 5}, {"count": 5})
    assert await fleet.client.query(ref) == {"count": 6}


async def test_send_returns_the_command_id_without_waiting(fleet: EmbeddedFleet) -> None:
    ref = counter.Counter.ref("fire-and-forget")
    command_id = await fleet.client.send(ref, counter.Increment(amount=2), command_id="s-1")
    assert command_id == "s-1"
    generated = await fleet.client.send(ref, counter.Increment(amount=3))
    uuid.UUID(generated)

    async def both_applied() -> bool:
        return bool(await fleet.client.query(ref) == {"count": 5})

    await eventually(both_applied)
    history = await fleet.store.history(ref.id)
    assert [event.command_id for event in history] == ["s-1", generated]


async def test_effects_are_dispatched_after_the_commit_once(
    fleet: EmbeddedFleet, mailer: Recorder
) -> None:
    ref = counter.Counter.ref("c")
    await fleet.client.call(ref, counter.Increment(amount=12))

    async def dispatched() -> bool:
        return bool(mailer.calls)

    await eventually(dispatched)
    await asyncio.sleep(0.1)
    assert mailer.calls == [({"threshold": 10}, {"to": "ops"})]
    assert await fleet.store.pending_effects() == []


async def test_a_handler_is_told_the_stable_id_of_the_effect_it_dispatches(
    fleet: EmbeddedFleet, mailer: Recorder
) -> None:
    ref = counter.Counter.ref("c")
    await fleet.client.call(ref, counter.Increment(amount=12), command_id="crossing")

    async def dispatched() -> bool:
        return bool(mailer.effects)

    await eventually(dispatched)
    # The id every delivery of this effect carries (docs/protocol.md): the first
    # effect of command "crossing" of this entity.
    effect_id = str(uuid.uuid5(ref.id, "crossing/0"))
    assert mailer.effects == [
        EffectContext(
            effect_id=effect_id,
            attempt=1,
            handler="admin_mailer",
            source_entity_id=str(ref.id),
            source_command_id="crossing",
        )
    ]


async def test_a_transfer_reaches_its_target_and_a_bounce_comes_back(
    fleet: EmbeddedFleet,
) -> None:
    client = fleet.client
    alice, bob, carol = bank.account("alice"), bank.account("bob"), bank.account("carol")
    await client.call(alice, bank.Open(owner="alice"))
    await client.call(alice, bank.Deposit(amount=100))
    await client.call(bob, bank.Open(owner="bob"))
    await client.call(alice, bank.Transfer(to=bob.id, amount=30))
    await client.call(alice, bank.Transfer(to=carol.id, amount=20))
    with pytest.raises(RejectedError, match="insufficient_funds"):
        await client.call(alice, bank.Transfer(to=bob.id, amount=1000))

    async def settled() -> bool:
        state = await client.query(alice)
        return bool(state["balance"] == 70)

    await eventually(settled)
    app = fleet.app
    assert (await assert_replay_matches(fleet.store, app, bob)).balance == 30
    assert (await assert_replay_matches(fleet.store, app, carol)).balance == 0


async def test_the_client_refuses_what_it_cannot_send(fleet: EmbeddedFleet) -> None:
    with pytest.raises(UnknownNameError):
        await fleet.client.call(bank.account("a"), counter.Increment())


async def test_an_id_of_another_type_is_bad_input_and_writes_nothing(
    fleet: EmbeddedFleet,
) -> None:
    alice = bank.account("alice")
    await fleet.client.call(alice, bank.Open(owner="alice"))
    as_counter = Ref("counter", alice.id)
    with pytest.raises(EntityTypeMismatchError, match="is a 'account', not a 'counter'"):
        await fleet.client.call(as_counter, counter.Increment())
    with pytest.raises(EntityTypeMismatchError):
        await fleet.client.query(as_counter)
    assert [e.version for e in await fleet.store.history(alice.id)] == [1]


async def raw_call(fleet: EmbeddedFleet, message: Message) -> Any:
    replies: asyncio.Queue[Message] = asyncio.Queue()

    async def on_reply(reply: Message) -> None:
        await replies.put(reply)

    address = await fleet.transport.listen_replies(on_reply)
    await fleet.transport.publish_command(
        Message(
            message.body,
            message.routing_key,
            message.message_id,
            "corr",
            address,
            message.content_type,
            message.type,
            message.headers,
        )
    )
    reply = await asyncio.wait_for(replies.get(), 2)
    assert reply.correlation_id == "corr"
    return codec.decode(reply.body, reply.content_type)


def command(body: bytes, **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "body": body,
        "routing_key": str(bank.account("x").id),
        "message_id": str(uuid.uuid4()),
        "content_type": "application/json",
        "type": "Open",
        "headers": {ENTITY_TYPE_HEADER: "account"},
    }
    return Message(**(fields | overrides))


@pytest.mark.parametrize(
    ("message", "error", "says"),
    [
        (command(b"{not json"), "DecodeError", "malformed JSON"),
        (command(b"{}"), "InvalidMessageError", "owner: Field required"),
        (command(b'{"owner": ""}'), "InvalidMessageError", "at least 1 character"),
        (command(b"{}", type="Steal"), "UnknownNameError", "unknown command 'Steal'"),
        (command(b"{}", headers={ENTITY_TYPE_HEADER: "nope"}), "UnknownNameError", "nope"),
        (command(b"{}", headers={}), "InvalidInputError", "pachyderm-entity-type"),
        (command(b"{}", routing_key="alice"), "InvalidEntityIdError", "must be a UUID"),
        (
            command(b'{"owner": "x"}', routing_key=str(bank.account("x").id).upper()),
            "InvalidEntityIdError",
            "in canonical form (lower case, hyphenated",
        ),
        (command(b"{}", message_id=None), "InvalidInputError", "needs a message_id"),
        (command(b"{}", content_type="text/plain"), "UnsupportedContentTypeError", "text/plain"),
        (command(b"[" * 100 + b"]" * 100), "DecodeError", "nesting deeper"),
        (command(b" " * (2 * 1024 * 1024)), "DecodeError", "exceeds the limit"),
    ],
)
async def test_bad_input_gets_a_clear_error_reply_and_the_partition_keeps_flowing(
    fleet: EmbeddedFleet, message: Message, error: str, says: str
) -> None:
    reply = await raw_call(fleet, message)
    assert (reply["status"], reply["error"]) == ("invalid", error)
    assert says in reply["message"]
    good = command(b'{"owner": "x"}')
    assert (await raw_call(fleet, good))["status"] == "ok"


async def test_bad_input_without_reply_to_is_dead_lettered(fleet: EmbeddedFleet) -> None:
    await fleet.transport.publish_command(command(b"{not json"))

    async def dead_lettered() -> bool:
        return len(fleet.transport.dead_letters) == 1

    await eventually(dead_lettered)
    good = command(b'{"owner": "x"}')
    assert (await raw_call(fleet, good))["status"] == "ok"


async def test_a_json_caller_gets_json_replies(fleet: EmbeddedFleet) -> None:
    reply = await raw_call(fleet, command(b'{"owner": "x"}'))
    assert reply == {"status": "ok", "version": 1, "reply": {"owner": "x", "balance": 0}}
    with pytest.raises(InvalidMessageError) as invalid:
        await fleet.client.call_named(bank.account("x"), "Deposit", {"amount": -1})
    assert [p.location for p in invalid.value.problems] == ["amount"]
    assert "greater than 0" in str(invalid.value)
    with pytest.raises(UnknownNameError, match="nope"):
        await fleet.client.call_named(Ref.from_key("nope", "x"), "Open", {})
    with pytest.raises(InvalidInputError):
        await fleet.client.call_named(bank.account("x"), "Deposit", "not a map")


async def test_a_misspelled_field_is_invalid_naming_it_and_writes_nothing(
    fleet: EmbeddedFleet,
) -> None:
    ref = counter.Counter.ref("typo")
    # Read tolerantly, it would increment by the default 1.
    with pytest.raises(InvalidMessageError) as invalid:
        await fleet.client.call_named(ref, "Increment", {"amout": 50})
    assert [p.location for p in invalid.value.problems] == ["amout"]
    reply = await raw_call(fleet, command(b'{"owner": "x", "ownr": "y"}'))
    assert (reply["status"], [p["location"] for p in reply["problems"]]) == ("invalid", ["ownr"])
    assert await fleet.store.history(ref.id) == []
    assert await fleet.store.history(bank.account("x").id) == []
