"""The gateway's OpenAPI 3.1 document, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from ._problems import PROBLEM_JSON, TYPE_PREFIX
from ._requests import DEFAULT_PAGE, IDEMPOTENCY_KEY, MAX_IDEMPOTENCY_KEY, MAX_PAGE
from ._routes import COMMAND_ID_HEADER, COMMANDS, ENTITY, HISTORY, QUERIES

OPENAPI = "/openapi.json"
# Served by pachyderm.telemetry.health_routes, as on the workers.
HEALTHZ, READYZ, METRICS = "/healthz", "/readyz", "/metrics"

# Each error status an operation may answer: what it means, and its schema.
_PROBLEMS = {
    "400": ("Invalid input: an id, a header, a parameter, or not a JSON object", "Problem"),
    "401": ("No bearer token, or an unknown one", "Problem"),
    "403": ("The token lacks the right this operation needs", "Problem"),
    "404": ("No such entity type, command or query; or the id is another type's", "Problem"),
    "409": ("The entity rejected the command; nothing was written", "RejectionProblem"),
    "413": ("The body is larger than the gateway accepts", "Problem"),
    "415": ("The body is not sent as application/json", "Problem"),
    "422": ("The fields do not match the command or query", "InvalidFieldsProblem"),
    "500": ("The entity's code failed (nothing was written), or the gateway did", "Problem"),
    "503": ("The broker or the event store is unavailable; retry later", "Problem"),
    "504": ("No reply in time: the command may still apply; retry with the same key", "Problem"),
}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: str, description: str, **extra: Any) -> dict[str, Any]:
    content = {"application/json": {"schema": _ref("schemas", schema)}}
    return {"description": description, "content": content, **extra}


def _operation(
    summary: str,
    ok: dict[str, Any],
    problems: str,
    *,
    secured: bool,
    parameters: tuple[str, ...] = ("type", "id"),
    body: str | None = None,
) -> dict[str, Any]:
    """One operation; ``problems`` lists its error statuses (401 and 403 added if secured)."""
    statuses = problems.split() + (["401", "403"] if secured else [])
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [_ref("parameters", name) for name in parameters],
        "responses": {"200": ok} | {s: _ref("responses", s) for s in sorted(statuses)},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "description": body,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return operation


def _unsecured(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "security": [], "responses": responses}


def _paths(*, secured: bool, history: bool) -> dict[str, Any]:
    command_id = {
        COMMAND_ID_HEADER: {
            "description": "The command id: the Idempotency-Key, or the id the gateway chose",
            "schema": {"type": "string"},
        }
    }
    paths: dict[str, Any] = {
        COMMANDS: {
            "post": _operation(
                "Send a command to an entity and wait for its reply",
                _json(
                    "Reply", "Applied (or applied before, with the same key)", headers=command_id
                ),
                "400 404 409 413 415 422 500 503 504",
                secured=secured,
                parameters=("type", "id", "command", "idempotency-key"),
                body="The command's fields",
            )
        },
        QUERIES: {
            "post": _operation(
                "Ask an entity a read-only question; writes nothing",
                _json("Reply", "The answer"),
                "400 404 413 415 422 500 503 504",
                secured=secured,
                parameters=("type", "id", "query"),
                body="The query's fields",
            )
        },
        ENTITY: {
            "get": _operation(
                "Read an entity's state (version 0: never written)",
                _json("State", "The state"),
                "400 404 500 503 504",
                secured=secured,
            )
        },
        HEALTHZ: {
            "get": _unsecured("Liveness", {"200": _json("Liveness", "The process is alive")})
        },
        READYZ: {
            "get": _unsecured(
                "Readiness: the broker takes messages and the event store answers",
                {
                    "200": _json("Readiness", "Ready"),
                    "503": _json("Readiness", "Not ready: the failing checks say why"),
                },
            )
        },
        METRICS: {
            "get": _unsecured(
                "Metrics, in Prometheus's text format",
                {"200": {"description": "The metrics", "content": {"text/plain": {}}}},
            )
        },
        OPENAPI: {
            "get": _unsecured(
                "This document",
                {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            )
        },
    }
    if history:
        link = {"Link": {"description": 'The next page, rel="next"', "schema": {"type": "string"}}}
        paths[HISTORY] = {
            "get": _operation(
                "Read a page of an entity's events, oldest first",
                _json("History", "A page of events", headers=link),
                "400 404 500 503",
                secured=secured,
                parameters=("type", "id", "from", "limit"),
            )
        }
    return paths


def _parameters() -> dict[str, Any]:
    def path(name: str, description: str) -> dict[str, Any]:
        schema = {"type": "string"}
        return {
            "name": name,
            "in": "path",
            "required": True,
            "description": description,
            "schema": schema,
        }

    def paging(name: str, description: str, default: int, maximum: int) -> dict[str, Any]:
        schema = {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}
        return {"name": name, "in": "query", "description": description, "schema": schema}

    return {
        "type": path("type", "The entity type, e.g. account"),
        "id": path("id", "The entity id: a UUID, or key:<natural key> (uuid5 of type and key)"),
        "command": path("command", "The command's registered name, e.g. Deposit"),
        "query": path("query", "The query's registered name"),
        "idempotency-key": {
            "name": IDEMPOTENCY_KEY,
            "in": "header",
            "description": "The command id: a retry with the same key applies the command once",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
        },
        "from": paging("from", "The first version on the page", 1, 10**18 - 1),
        "limit": paging("limit", "Events per page", DEFAULT_PAGE, MAX_PAGE),
    }


def _schemas() -> dict[str, Any]:
    any_json: dict[str, Any] = {}
    problem = {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {
                "type": "string",
                "format": "uri-reference",
                "description": f"about:blank, or {TYPE_PREFIX}<kind>",
            },
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
    }

    def problem_with(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
        extra = {"type": "object", "required": required, "properties": properties}
        return {"allOf": [_ref("schemas", "Problem"), extra]}

    field_problem = {
        "type": "object",
        "required": ["location", "problem"],
        "properties": {"location": {"type": "string"}, "problem": {"type": "string"}},
    }
    event = {
        "type": "object",
        "required": ["version", "name", "data", "command_id", "recorded_at"],
        "properties": {
            "version": {"type": "integer", "minimum": 1},
            "name": {"type": "string"},
            "data": any_json,
            "command_id": {"type": ["string", "null"]},
            "recorded_at": {"type": "string", "format": "date-time"},
        },
    }
    identity = {"type": {"type": "string"}, "id": {"type": "string", "format": "uuid"}}
    checks = {
        "type": "object",
        "description": "By check: ok, or why not",
        "additionalProperties": {"type": "string"},
    }
    return {
        "Problem": problem,
        "FieldProblem": field_problem,
        "InvalidFieldsProblem": problem_with(
            ["problems"], {"problems": {"type": "array", "items": _ref("schemas", "FieldProblem")}}
        ),
        "RejectionProblem": problem_with(
            ["reason"], {"reason": {"type": "string"}, "rejection_detail": any_json}
        ),
        "Reply": {
            "type": "object",
            "required": ["version", "reply"],
            "properties": {"version": {"type": "integer", "minimum": 0}, "reply": any_json},
        },
        "State": {
            "type": "object",
            "required": ["type", "id", "version", "state"],
            "properties": identity | {"version": {"type": "integer"}, "state": any_json},
        },
        "Event": event,
        "History": {
            "type": "object",
            "required": ["type", "id", "events", "next"],
            "properties": identity
            | {
                "events": {"type": "array", "items": _ref("schemas", "Event")},
                "next": {"type": ["string", "null"], "format": "uri-reference"},
            },
        },
        "Liveness": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "alive"}, "uptime_seconds": {"type": "number"}},
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {"status": {"enum": ["ready", "not ready"]}, "checks": checks},
        },
    }


def _responses() -> dict[str, Any]:
    return {
        status: {
            "description": description,
            "content": {PROBLEM_JSON: {"schema": _ref("schemas", schema)}},
        }
        for status, (description, schema) in _PROBLEMS.items()
    }


def openapi_document(*, secured: bool, history: bool) -> dict[str, Any]:
    """The document for a gateway with authentication on or off, serving history or not."""
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Pachyderm gateway",
            "version": "1",
            "description": "Commands, queries, state and history of event-sourced entities.",
        },
        "paths": _paths(secured=secured, history=history),
        "components": {
            "parameters": _parameters(),
            "schemas": _schemas(),
            "responses": _responses(),
        },
    }
    if secured:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document
