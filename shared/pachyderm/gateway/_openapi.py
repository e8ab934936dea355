"""The gateway's OpenAPI 3.1 document, served at ``/openapi.json``.

No body is spelled out here: the schemas are generated from the models the
routes answer with (``_bodies``, and the health bodies of
:mod:`pachyderm.telemetry`), and each answer's content type is its model's.
This module says which route answers which model, with which status.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

from ..telemetry._health import Liveness, Readiness
from ._bodies import (
    Body,
    Fields,
    History,
    InvalidFieldsProblem,
    Problem,
    RejectionProblem,
    Reply,
    State,
)
from ._requests import DEFAULT_PAGE, IDEMPOTENCY_KEY, MAX_IDEMPOTENCY_KEY, MAX_PAGE
from ._routes import COMMAND_ID_HEADER, COMMANDS, ENTITY, HISTORY, QUERIES

OPENAPI = "/openapi.json"
# Served by pachyderm.telemetry.health_routes, as on the workers.
HEALTHZ, READYZ, METRICS = "/healthz", "/readyz", "/metrics"

# Each error status an operation may answer: what it means, and its document.
_PROBLEMS: dict[str, tuple[str, type[Problem]]] = {
    "400": ("Invalid input: an id, a header, a parameter, or not a JSON object", Problem),
    "401": ("No bearer token, or an unknown one", Problem),
    "403": ("The token lacks the right this operation needs", Problem),
    "404": ("No such entity type, command or query; or the id is another type's", Problem),
    "409": ("The entity rejected the command; nothing was written", RejectionProblem),
    "413": ("The body is larger than the gateway accepts", Problem),
    "415": ("The body is not sent as application/json", Problem),
    "422": ("The fields do not match the command or query", InvalidFieldsProblem),
    "500": ("The entity's code failed (nothing was written), or the gateway did", Problem),
    "503": ("The broker or the event store is unavailable; retry later", Problem),
    "504": ("No reply in time: the command may still apply; retry with the same key", Problem),
}
# What the routes answer with; Fields is what they take.
_ANSWERS: tuple[type[BaseModel], ...] = (Reply, State, History, Liveness, Readiness)


class _Schemas(GenerateJsonSchema):
    """Models' JSON Schemas, without a title per field (its name says it)."""

    def field_title_should_be_set(self, schema: object) -> bool:
        return False


def _schemas() -> dict[str, Any]:
    """components/schemas: each model's JSON Schema, under the model's name."""
    answers = dict.fromkeys([*_ANSWERS, *(model for _, model in _PROBLEMS.values())])
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Fields, "validation")]
    models += [(model, "serialization") for model in answers]
    _, schema = models_json_schema(
        models,
        ref_template="#/components/schemas/{model}",
        schema_generator=_Schemas,
    )
    defs: dict[str, Any] = schema["$defs"]
    return defs


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _content(model: type[BaseModel]) -> dict[str, Any]:
    media_type = model.media_type if issubclass(model, Body) else "application/json"
    return {media_type: {"schema": _ref("schemas", model.__name__)}}


def _answer(model: type[BaseModel], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": _content(model), **extra}


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
            "content": _content(Fields),
        }
    return operation


def _unsecured(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "security": [], "responses": responses}


def _entity_paths(*, secured: bool, history: bool) -> dict[str, Any]:
    command_id = {
        COMMAND_ID_HEADER: {
            "description": "The command id: the Idempotency-Key, or the id the gateway chose",
            "schema": {"type": "string"},
        }
    }
    applied = "Applied (or applied before, with the same key)"
    paths = {
        COMMANDS: {
            "post": _operation(
                "Send a command to an entity and wait for its reply",
                _answer(Reply, applied, headers=command_id),
                "400 404 409 413 415 422 500 503 504",
                secured=secured,
                parameters=("type", "id", "command", "idempotency-key"),
                body="The command's fields",
            )
        },
        QUERIES: {
            "post": _operation(
                "Ask an entity a read-only question; writes nothing",
                _answer(Reply, "The answer"),
                "400 404 413 415 422 500 503 504",
                secured=secured,
                parameters=("type", "id", "query"),
                body="The query's fields",
            )
        },
        ENTITY: {
            "get": _operation(
                "Read an entity's state (version 0: never written)",
                _answer(State, "The state"),
                "400 404 500 503 504",
                secured=secured,
            )
        },
    }
    if history:
        link = {"Link": {"description": 'The next page, rel="next"', "schema": {"type": "string"}}}
        paths[HISTORY] = {
            "get": _operation(
                "Read a page of an entity's events, oldest first",
                _answer(History, "A page of events", headers=link),
                "400 404 500 503",
                secured=secured,
                parameters=("type", "id", "from", "limit"),
            )
        }
    return paths


def _public_paths() -> dict[str, Any]:
    def plain(description: str, media_type: str) -> dict[str, Any]:
        return {"200": {"description": description, "content": {media_type: {}}}}

    readiness = {
        "200": _answer(Readiness, "Ready"),
        "503": _answer(Readiness, "Not ready: the failing checks say why"),
    }
    return {
        HEALTHZ: {
            "get": _unsecured("Liveness", {"200": _answer(Liveness, "The process is alive")})
        },
        READYZ: {
            "get": _unsecured(
                "Readiness: the broker takes messages and the event store answers", readiness
            )
        },
        METRICS: {
            "get": _unsecured(
                "Metrics, in Prometheus's text format", plain("The metrics", "text/plain")
            )
        },
        OPENAPI: {"get": _unsecured("This document", plain("OpenAPI 3.1", "application/json"))},
    }


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


def _responses() -> dict[str, Any]:
    return {
        status: _answer(model, description) for status, (description, model) in _PROBLEMS.items()
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
        "paths": _entity_paths(secured=secured, history=history) | _public_paths(),
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
