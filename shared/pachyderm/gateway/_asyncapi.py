"""An app's AsyncAPI document: the generic wire contract with a message per registered
command and query, whose payload is the message's schema.

The generic document is ``asyncapi.yaml`` beside this module, package data so that
an installed package has it (``pachyderm asyncapi`` prints an app's document from
it); ``docs/asyncapi.yaml`` is a symbolic link to it, so there is one source.

The generic document stays the contract for any app (a command's payload is
any object); this one is what a caller of one app may send. Each specific
message is the generic ``Command`` or ``Query`` (same headers, bindings and
content type) narrowed: its payload is the schema ``_schemas`` generates, and
its ``pachyderm-entity-type`` header is its entity type. The commands channel
publishes one of them, or the generic ``Query`` (the plain question "your
state", whose type is empty). Event and state schemas are published under
``components/schemas`` too: a reply's ``reply`` is the state by default.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

# PyYAML: a dependency of swagger-ui-py, which serves the gateway's /docs page.
import yaml

from .._app import App
from .._errors import PachydermError
from ._schemas import Message, app_schemas

GENERIC_DOCUMENT = "asyncapi.yaml"
COMMANDS_CHANNEL = "{namespace}.commands"
_GENERIC = {"command": "Command", "query": "Query"}


def generic_document() -> dict[str, Any]:
    """The generic document the package ships, parsed (a fresh copy each time)."""
    return copy.deepcopy(_parsed_generic())


@cache
def _parsed_generic() -> dict[str, Any]:
    text = resources.files(__package__).joinpath(GENERIC_DOCUMENT).read_text(encoding="utf-8")
    parsed = yaml.safe_load(text)
    if not isinstance(parsed, dict):
        raise PachydermError(f"the packaged {GENERIC_DOCUMENT} is not a mapping")
    return parsed


def asyncapi_document(
    app: App, generic: Mapping[str, Any] | None = None, *, namespace: str = "pachyderm"
) -> dict[str, Any]:
    """``generic`` (by default the packaged document, ``docs/asyncapi.yaml``) made
    specific to ``app``; ``generic`` is left as it is. ``namespace`` names the commands
    channel, as in the document."""
    document: dict[str, Any] = (
        generic_document() if generic is None else copy.deepcopy(dict(generic))
    )
    schemas = app_schemas(app, "#/components/schemas/")
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).update(schemas.schemas)
    messages = components.setdefault("messages", {})
    specific = [m for m in schemas.messages if m.kind in _GENERIC]
    for m in specific:
        messages[m.component] = _message(messages[_GENERIC[m.kind]], m, schemas.ref(m.component))
    publish = document["channels"][COMMANDS_CHANNEL.format(namespace=namespace)]["publish"]
    published = [*(m.component for m in specific), _GENERIC["query"]]
    publish["message"] = {"oneOf": [{"$ref": f"#/components/messages/{n}"} for n in published]}
    title = document.setdefault("info", {}).get("title", "Pachyderm entities")
    document["info"]["title"] = f"{title}: {', '.join(t.name for t in app) or 'no entity type'}"
    return document


def _message(generic: Mapping[str, Any], m: Message, payload: dict[str, str]) -> dict[str, Any]:
    """The generic message ``generic`` narrowed to ``m``."""
    message: dict[str, Any] = copy.deepcopy(dict(generic))
    message["name"] = m.component
    message["title"] = f"{m.name} ({m.entity} {m.kind})"
    message["summary"] = f"The {m.kind} {m.name} to an entity of type {m.entity}."
    message["payload"] = payload
    headers = message.setdefault("headers", {"type": "object", "properties": {}})
    headers.setdefault("required", [])
    if "pachyderm-entity-type" not in headers["required"]:
        headers["required"].append("pachyderm-entity-type")
    headers["properties"]["pachyderm-entity-type"] = {"type": "string", "const": m.entity}
    message.setdefault("bindings", {}).setdefault("amqp", {})["messageType"] = m.name
    return message
