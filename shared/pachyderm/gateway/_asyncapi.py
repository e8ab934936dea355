"""An app's AsyncAPI document: the generic wire contract (``docs/asyncapi.yaml``) with
a message per registered command and query, whose payload is the message's schema.

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
from typing import Any

from .._app import App
from ._schemas import Message, app_schemas

COMMANDS_CHANNEL = "{namespace}.commands"
_GENERIC = {"command": "Command", "query": "Query"}


def asyncapi_document(
    app: App, generic: Mapping[str, Any], *, namespace: str = "pachyderm"
) -> dict[str, Any]:
    """``generic`` (docs/asyncapi.yaml, parsed) made specific to ``app``; ``generic`` is
    left as it is. ``namespace`` names the commands channel, as in the document."""
    document: dict[str, Any] = copy.deepcopy(dict(generic))
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
