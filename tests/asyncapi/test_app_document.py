"""An app's AsyncAPI document (pachyderm.gateway.asyncapi_document): docs/asyncapi.yaml with
a message per registered command and query, valid by the official schemas; the messages
the client builds are its messages, and a payload its schema refuses the worker refuses."""

from __future__ import annotations

import json

import pytest

from examples import bank, counter
from examples.demo import APP
from pachyderm import InvalidMessageError
from pachyderm import _codec as codec
from pachyderm import _wire as wire
from pachyderm.gateway import asyncapi_document
from pachyderm.transport import Message

from .document import Json, document, message, mismatches, official_errors, resolve

ALICE = bank.account("alice")


@pytest.fixture
def spec() -> Json:
    return asyncapi_document(APP, document())


def test_the_app_s_document_is_valid_and_leaves_the_generic_one_alone(spec: Json) -> None:
    assert official_errors(spec) == []
    assert asyncapi_document(APP) == spec  # the packaged generic document by default
    generic = document()
    asyncapi_document(APP, generic)
    assert generic == document()
    assert "account.command.Deposit" not in generic["components"]["messages"]


def test_each_command_and_query_is_a_message_with_its_schema(spec: Json) -> None:
    deposit = message(spec, "account.command.Deposit")
    payload = resolve(spec, deposit["payload"])
    assert payload["properties"] == {"amount": {"type": "integer", "exclusiveMinimum": 0}}
    assert payload["additionalProperties"] is False
    assert deposit["bindings"]["amqp"]["messageType"] == "Deposit"
    assert deposit["headers"]["properties"]["pachyderm-entity-type"]["const"] == "account"
    published = spec["channels"]["pachyderm.commands"]["publish"]["message"]["oneOf"]
    names = {reference["$ref"].removeprefix("#/components/messages/") for reference in published}
    expected = {
        f"{entity.name}.{kind}.{name}"
        for entity in APP
        for kind, registry in (("command", entity.commands), ("query", entity.queries))
        for name in registry.names
    }
    assert names == expected | {"Query"}
    # Events and states are published as schemas.
    assert "account.event.Deposited" in spec["components"]["schemas"]
    assert "account.state" in spec["components"]["schemas"]


def test_the_client_s_commands_are_the_app_s_messages(spec: Json) -> None:
    built = [
        ("counter.command.Increment", counter.Counter.ref("c"), counter.Increment(amount=3)),
        ("account.command.Open", ALICE, bank.Open(owner="Alice")),
        ("account.command.Deposit", ALICE, bank.Deposit(amount=5)),
    ]
    for name, ref, command in built:
        sent = wire.command_message(APP, ref, command)
        problems = mismatches(
            spec, name, body=sent.body, content_type=sent.content_type, headers=sent.headers
        )
        assert problems == [], name
    query = wire.command_message(APP, ALICE, bank.Balance(), kind=wire.QUERY)
    problems = mismatches(
        spec,
        "account.query.Balance",
        body=query.body,
        content_type=query.content_type,
        headers=query.headers,
    )
    assert problems == []


def test_what_the_schema_refuses_the_worker_refuses(spec: Json) -> None:
    headers = {"pachyderm-entity-type": "account", "pachyderm-kind": "command"}
    for fields in ({"amount": 5}, {"amout": 5}, {"amount": -1}, {"amount": "x"}, {}):
        body = json.dumps(fields).encode()
        problems = mismatches(
            spec, "account.command.Deposit", body=body, content_type=codec.JSON, headers=headers
        )
        sent = Message(
            body, str(ALICE.id), "d", content_type=codec.JSON, type="Deposit", headers=headers
        )
        try:
            wire.parse_request(APP, sent)
        except InvalidMessageError:
            taken = False
        else:
            taken = True
        assert (problems == []) is taken, (fields, problems)
    # Another entity type's header is not this message's.
    other = {**headers, "pachyderm-entity-type": "counter"}
    body = json.dumps({"amount": 5}).encode()
    assert mismatches(
        spec, "account.command.Deposit", body=body, content_type=codec.JSON, headers=other
    )
