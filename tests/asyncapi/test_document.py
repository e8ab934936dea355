"""docs/asyncapi.yaml is a valid AsyncAPI 2.6.0 document, by the official JSON Schemas;
it is the document the package ships, by a link to it (one source)."""

from __future__ import annotations

import pytest

from examples.demo import APP
from pachyderm import App
from pachyderm.gateway import asyncapi_document
from pachyderm.gateway._asyncapi import generic_document

from .document import (
    DOCS_LINK,
    DOCUMENT,
    amqp_binding_count,
    document,
    message,
    official_errors,
    resolve,
)


def test_docs_asyncapi_yaml_is_a_link_to_the_packaged_document() -> None:
    # A copy could drift from what the package ships: docs/ only links to it.
    assert DOCS_LINK.is_symlink()
    assert DOCS_LINK.resolve() == DOCUMENT.resolve()
    assert not DOCUMENT.is_symlink()


def test_the_package_reads_the_document_it_ships() -> None:
    assert generic_document() == document()
    spoiled = generic_document()
    spoiled["info"]["title"] = "spoiled"
    assert generic_document() == document()  # a fresh copy each time


def test_the_document_is_valid_asyncapi_2_6_0_with_valid_amqp_bindings() -> None:
    spec = document()
    assert spec["asyncapi"] == "2.6.0"
    assert official_errors(spec) == []
    # Channels, their operations and the messages carry AMQP bindings, all checked.
    assert amqp_binding_count(spec) >= 7


def test_the_official_schemas_catch_a_spoiled_document() -> None:
    spec = document()
    spec["channels"]["reply"]["subscribe"]["bogus"] = True
    spec["components"]["messages"]["Reply"]["payload"]["type"] = "map"
    spec["channels"]["pachyderm.commands"]["bindings"]["amqp"]["exchange"]["type"] = "hash"
    spec["channels"]["pachyderm.commands"]["publish"]["bindings"]["amqp"]["deliveryMode"] = 3
    errors = "\n".join(official_errors(spec))
    assert "channels/reply/subscribe: 'bogus'" in errors
    assert "components/messages/Reply" in errors
    assert "channels/pachyderm.commands/bindings/amqp: 'hash'" in errors
    assert "channels/pachyderm.commands/publish/bindings/amqp: 3" in errors


@pytest.mark.parametrize("app", [None, APP], ids=["generic", "app"])
def test_every_channel_message_is_one_of_the_components(app: App | None) -> None:
    # The app's document too (test_app_document): its messages are all published.
    spec = document() if app is None else asyncapi_document(app, document())
    used = set()
    for channel in spec["channels"].values():
        for operation in ("publish", "subscribe"):
            if operation not in channel:
                continue
            sent = channel[operation]["message"]
            for reference in sent.get("oneOf", [sent]):
                name = reference["$ref"].removeprefix("#/components/messages/")
                assert resolve(spec, reference) is message(spec, name)
                used.add(name)
    assert used == set(spec["components"]["messages"])
