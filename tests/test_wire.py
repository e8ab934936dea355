"""The wire contract's entity ids: only the canonical spelling goes out or comes in.

The commands exchange hashes the routing key as text, so one entity spelled
two ways would be served by two partitions at once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from examples import bank, counter
from pachyderm import App, InvalidEntityIdError, Ref, Send
from pachyderm import _codec as codec
from pachyderm._execution import encode_effect
from pachyderm._wire import (
    COMMAND,
    ENTITY_TYPE_HEADER,
    QUERY,
    command_message,
    effect_message,
    named_message,
    parse_request,
)
from pachyderm.store import OutboxEntry
from pachyderm.transport import Message

APP = App([counter.Counter, bank.Account])
ID = bank.account("alice").id
SPELLINGS = [str(ID).upper(), ID.hex, f"{{{ID}}}", f"urn:uuid:{ID}"]


def command_to(routing_key: str) -> Message:
    return Message(
        body=codec.encode({"owner": "alice"}),
        routing_key=routing_key,
        message_id="c1",
        content_type=codec.MSGPACK,
        type="Open",
        headers={ENTITY_TYPE_HEADER: "account"},
    )


def test_a_command_to_the_canonical_id_parses() -> None:
    request = parse_request(APP, command_to(str(ID)))
    assert request.ref == Ref("account", ID)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_command_to_any_other_spelling_is_invalid_naming_the_canonical_form(
    spelling: str,
) -> None:
    with pytest.raises(InvalidEntityIdError) as refused:
        parse_request(APP, command_to(spelling))
    assert "canonical form (lower case, hyphenated" in str(refused.value)
    assert spelling in str(refused.value)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_what_the_client_publishes_is_canonical_however_the_id_was_typed(spelling: str) -> None:
    ref = Ref.parse("account", spelling)
    messages = [
        command_message(APP, ref, bank.Open(owner="alice")),
        command_message(APP, ref, None, kind=QUERY),
        named_message(ref, "Deposit", {"amount": 1}, kind=COMMAND),
    ]
    assert {message.routing_key for message in messages} == {str(ID)}
    assert parse_request(APP, messages[0]).ref == Ref("account", ID)


def outbox_entry(payload: bytes) -> OutboxEntry:
    return OutboxEntry(
        uuid.uuid4(), "command.account", payload, uuid.uuid4(), "c1", datetime.now(UTC)
    )


def test_an_entity_to_entity_effect_is_routed_by_the_canonical_id() -> None:
    sent = Send(Ref.parse("account", str(ID).upper()), bank.Deposit(amount=5))
    new = encode_effect(
        APP.entity_type("counter"), sent, uuid.uuid4(), entity_types=APP.entity_type
    )
    kind, message = effect_message(outbox_entry(new.payload))
    assert (kind, message.routing_key) == (COMMAND, str(ID))
    assert parse_request(APP, message).ref == Ref("account", ID)


def test_an_effect_stored_with_another_spelling_still_goes_out_canonical() -> None:
    payload = codec.encode(
        {"entity_type": "account", "entity_id": ID.hex.upper(), "command": "Open", "data": {}}
    )
    assert effect_message(outbox_entry(payload))[1].routing_key == str(ID)
