"""The request parameters as the OpenAPI document describes them: the path's segments,
the ``Idempotency-Key`` header and the history's paging, with the limits ``_requests``
enforces (its constants, so the two cannot differ)."""

from __future__ import annotations

from typing import Any

from ._requests import DEFAULT_PAGE, IDEMPOTENCY_KEY, MAX_IDEMPOTENCY_KEY, MAX_PAGE, MAX_VERSION


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _paging(name: str, description: str, default: int, maximum: int) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}
    return {"name": name, "in": "query", "description": description, "schema": schema}


def parameters() -> dict[str, Any]:
    """components/parameters, by the name the operations refer to them."""
    key = {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY}
    return {
        "type": _path("type", "The entity type, e.g. account"),
        "id": _path("id", "The entity id: a UUID, or key:<natural key> (uuid5 of type and key)"),
        "command": _path("command", "The command's registered name, e.g. Deposit"),
        "query": _path("query", "The query's registered name"),
        "key": _path("key", "The timer's key, as the entity scheduled it"),
        "idempotency-key": {
            "name": IDEMPOTENCY_KEY,
            "in": "header",
            "description": "The command id: a retry with the same key applies the command once,"
            " within the fleet's command window (PACHYDERM_COMMAND_RETENTION, 7 days by"
            " default) of the first request",
            "schema": key,
        },
        "from": _paging("from", "The first version on the page", 1, MAX_VERSION),
        "limit": _paging("limit", "Events per page", DEFAULT_PAGE, MAX_PAGE),
    }
