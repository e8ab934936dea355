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
from ._parameters import parameters
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
# What the routes answer with, besides problems; Fields is what they take.
_ANSWERS: tuple[type[BaseModel], ...] = (Reply, State, History, Liveness, Readiness)
_HEADERS = {
    COMMAND_ID_HEADER: "The command id: the Idempotency-Key, or the id the gateway chose",
    "Link": 'The next page, rel="next"',
}


class _Schemas(GenerateJsonSchema):
    """Models' JSON Schemas, without a title per field (its name says it)."""

    def field_title_should_be_set(self, schema: object) -> bool:
        return False


def _schemas() -> dict[str, Any]:
    """components/schemas: each model's JSON Schema, under the model's name."""
    answers = dict.fromkeys([*_ANSWERS, *(model for _, model in _PROBLEMS.values())])
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Fields, "validation")]
    models += [(model, "serialization") for model in answers]
    template = "#/components/schemas/{model}"
    _, schema = models_json_schema(models, ref_template=template, schema_generator=_Schemas)
    defs: dict[str, Any] = schema["$defs"]
    return defs


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _content(model: type[BaseModel]) -> dict[str, Any]:
    media_type = model.media_type if issubclass(model, Body) else "application/json"
    return {media_type: {"schema": _ref("schemas", model.__name__)}}


def _answer(model: type[BaseModel], description: str, header: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": _content(model)}
    if header is not None:
        answer["headers"] = {
            header: {"description": _HEADERS[header], "schema": {"type": "string"}}
        }
    return answer


def _entity(
    summary: str, ok: dict[str, Any], problems: str, parameters: str, body: str | None
) -> dict[str, Any]:
    """An entity route: ``problems`` are its error statuses, ``parameters`` its
    parameters' names, ``body`` the description of what it takes, if anything."""
    responses = {"200": ok} | {status: _ref("responses", status) for status in problems.split()}
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [_ref("parameters", name) for name in parameters.split()],
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "description": body,
            "content": _content(Fields),
        }
    return operation


def _public(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "security": [], "responses": responses}


def _paths(*, secured: bool, history: bool) -> dict[str, Any]:
    refusals = " 401 403" if secured else ""  # no token, or one without the right
    paths = {
        COMMANDS: {
            "post": _entity(
                "Send a command to an entity and wait for its reply",
                _answer(Reply, "Applied (or applied before, with the same key)", COMMAND_ID_HEADER),
                "400" + refusals + " 404 409 413 415 422 500 503 504",
                "type id command idempotency-key",
                "The command's fields",
            )
        },
        QUERIES: {
            "post": _entity(
                "Ask an entity a read-only question; writes nothing",
                _answer(Reply, "The answer"),
                "400" + refusals + " 404 413 415 422 500 503 504",
                "type id query",
                "The query's fields",
            )
        },
        ENTITY: {
            "get": _entity(
                "Read an entity's state (version 0: never written)",
                _answer(State, "The state"),
                "400" + refusals + " 404 500 503 504",
                "type id",
                None,
            )
        },
        HEALTHZ: {"get": _public("Liveness", {"200": _answer(Liveness, "The process is alive")})},
        READYZ: {
            "get": _public(
                "Readiness: the broker takes messages and the event store answers",
                {
                    "200": _answer(Readiness, "Ready"),
                    "503": _answer(Readiness, "Not ready: the failing checks say why"),
                },
            )
        },
        METRICS: {
            "get": _public(
                "Metrics, in Prometheus's text format",
                {"200": {"description": "The metrics", "content": {"text/plain": {}}}},
            )
        },
        OPENAPI: {
            "get": _public(
                "This document",
                {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            )
        },
    }
    if history:
        paths[HISTORY] = {
            "get": _entity(
                "Read a page of an entity's events, oldest first",
                _answer(History, "A page of events", "Link"),
                "400" + refusals + " 404 500 503",
                "type id from limit",
                None,
            )
        }
    return paths


def openapi_document(*, secured: bool, history: bool) -> dict[str, Any]:
    """The document for a gateway with authentication on or off, serving history or not."""
    problems = {status: _answer(model, about) for status, (about, model) in _PROBLEMS.items()}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Pachyderm gateway",
            "version": "1",
            "description": "Commands, queries, state and history of event-sourced entities.",
        },
        "paths": _paths(secured=secured, history=history),
        "components": {"parameters": parameters(), "schemas": _schemas(), "responses": problems},
    }
    if secured:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document
