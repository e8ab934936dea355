"""The gateway's OpenAPI 3.1 document, served at ``/openapi.json``.

No body is spelled out here: the schemas are generated from the models the
routes answer with (``_bodies``, and the health bodies of
:mod:`pachyderm.telemetry`), and each answer's content type is its model's.
This module says which route answers which model, with which status.

Given the app, the document also has, per entity type, a path per command and
per query (``/entities/account/{id}/commands/Deposit``) and for its state and
history, whose bodies are the app's own schemas (``_schemas``): concrete paths
beside the templated ones, which still take any name. A command's reply is
documented as the entity's state, its default; a handler that chooses another
reply answers outside that schema (the description says so).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .._app import App
from ..telemetry._health import Liveness, Readiness
from . import _following, _listing
from ._admin import ADMIN_ENTITY, RELEASE_TIMER
from ._bodies import (
    Body,
    Entities,
    Fields,
    History,
    InvalidFieldsProblem,
    Problem,
    RejectionProblem,
    Reply,
    State,
    Timers,
)
from ._docs import DOCS
from ._parameters import parameters
from ._quarantine import PARAMETERS as QUARANTINE_PARAMETERS
from ._quarantine import quarantine_paths
from ._routes import (
    COMMAND_ID_HEADER,
    COMMANDS,
    ENTITIES,
    ENTITY,
    EVENTS,
    HISTORY,
    QUERIES,
    TIMERS,
)
from ._schemas import AppSchemas, Message, Untitled, app_schemas

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
    "410": (
        "The entity has ended (its handler ended it; queries still read its final state)"
        " or was erased (nothing of it is left): nothing was applied, and never will be",
        Problem,
    ),
    "413": ("The body is larger than the gateway accepts", Problem),
    "415": ("The body is not sent as application/json", Problem),
    "422": ("The fields do not match the command or query", InvalidFieldsProblem),
    "429": (
        "Overloaded: the fleet's queue for the entity is full, or the gateway has as many"
        " calls in flight as it takes; nothing was sent: retry after Retry-After seconds",
        Problem,
    ),
    "500": (
        "The entity's code failed (nothing was written; a command that took workers down"
        " PACHYDERM_MAX_ATTEMPTS times is quarantined), or the gateway did",
        Problem,
    ),
    "503": ("The broker or the event store is unavailable; retry after Retry-After", Problem),
    "504": ("No reply in time: the command may still apply; retry with the same key", Problem),
}
# What the routes answer with, besides problems; Fields is what they take.
_ANSWERS: tuple[type[BaseModel], ...] = (
    *(Reply, State, History, Timers, Entities, Liveness, Readiness),
)
_HEADERS = {
    COMMAND_ID_HEADER: "The command id: the Idempotency-Key, or the id the gateway chose",
    "Link": 'The next page, rel="next"',
    "Retry-After": "Seconds to wait before trying again",
}
# The problems that say when to try again.
_RETRY_AFTER = frozenset({"429", "503"})


def _schemas() -> dict[str, Any]:
    """components/schemas: each model's JSON Schema, under the model's name."""
    answers = dict.fromkeys([*_ANSWERS, *(model for _, model in _PROBLEMS.values())])
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Fields, "validation")]
    models += [(model, "serialization") for model in answers]
    template = "#/components/schemas/{model}"
    _, schema = models_json_schema(models, ref_template=template, schema_generator=Untitled)
    defs: dict[str, Any] = schema["$defs"]
    return defs


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _content(model: type[BaseModel], members: dict[str, Any] | None = None) -> dict[str, Any]:
    """``model``'s content; ``members`` narrow the schemas of some of its members."""
    media_type = model.media_type if issubclass(model, Body) else "application/json"
    schema: dict[str, Any] = _ref("schemas", model.__name__)
    if members:
        schema = {"allOf": [schema], "properties": members}
    return {media_type: {"schema": schema}}


def _answer(
    model: type[BaseModel],
    description: str,
    header: str | None = None,
    members: dict[str, Any] | None = None,
) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": _content(model, members)}
    if header is not None:
        answer["headers"] = {
            header: {"description": _HEADERS[header], "schema": {"type": "string"}}
        }
    return answer


class _Operations:
    """The operations of the entity routes, templated or for one entity type: their
    error statuses (401 and 403 when ``secured``) and parameters are the same either way."""

    def __init__(self, *, secured: bool) -> None:
        self.refusals = " 401 403" if secured else ""  # no token, or one without the right

    def command(self, parameters: str, body: dict[str, Any], reply: Any = None) -> dict[str, Any]:
        ok = _answer(
            Reply,
            "Applied (or applied before, with the same key); the reply is the new state "
            "unless the entity's handler chose another",
            COMMAND_ID_HEADER,
            None if reply is None else {"reply": reply},
        )
        return self._entity(
            "Send a command to an entity and wait for its reply",
            ok,
            "400" + self.refusals + " 404 409 410 413 415 422 429 500 503 504",
            parameters + " idempotency-key",
            {"description": "The command's fields", "schema": body},
        )

    def query(self, parameters: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._entity(
            "Ask an entity a read-only question; writes nothing",
            _answer(Reply, "The answer"),
            "400" + self.refusals + " 404 410 413 415 422 429 500 503 504",
            parameters,
            {"description": "The query's fields", "schema": body},
        )

    def state(self, state: Any = None) -> dict[str, Any]:
        return self._entity(
            "Read an entity's state (version 0: never written)",
            _answer(State, "The state", None, None if state is None else {"state": state}),
            "400" + self.refusals + " 404 410 429 500 503 504",
            "type id" if state is None else "id",
            None,
        )

    def history(self, events: Any = None) -> dict[str, Any]:
        members = None if events is None else {"events": {"items": events}}
        return self._entity(
            "Read a page of an entity's events, oldest first",
            _answer(History, "A page of events", "Link", members),
            "400" + self.refusals + " 404 500 503",
            "type id from limit" if events is None else "id from limit",
            None,
        )

    def timers(self, parameters: str = "type id") -> dict[str, Any]:
        return self._entity(
            "Read an entity's pending timers, soonest first",
            _answer(Timers, "The pending timers"),
            "400" + self.refusals + " 404 500 503",
            parameters,
            None,
        )

    def listing(self) -> dict[str, Any]:
        return self._with(
            self._entity(
                "List the entities of a type, a page at a time, by id or by last change",
                _answer(Entities, "A page of entities", "Link"),
                "400" + self.refusals + " 404 500 503",
                "type",
                None,
            ),
            _listing.PARAMETERS,
        )

    def following(self) -> dict[str, Any]:
        stream = {
            "description": "The entity's events from the version asked for, then each new one"
            " as it commits, as Server-Sent Events: per event, event: its name, id: its"
            " version, data: the event as JSON (the schema Event)",
            "content": {_following.EVENT_STREAM: {}},
        }
        return self._with(
            self._entity(
                "Follow an entity live: its events as Server-Sent Events",
                stream,
                "400" + self.refusals + " 404 500 503",
                "type id",
                None,
            ),
            _following.PARAMETERS,
        )

    @staticmethod
    def _with(operation: dict[str, Any], parameters: list[dict[str, Any]]) -> dict[str, Any]:
        """``operation`` with ``parameters`` of its own besides those it refers to."""
        return operation | {"parameters": [*operation["parameters"], *parameters]}

    @staticmethod
    def _entity(
        summary: str, ok: dict[str, Any], problems: str, parameters: str, body: Any
    ) -> dict[str, Any]:
        """An entity route: ``problems`` are its error statuses, ``parameters`` its
        parameters' names, ``body`` the description and schema of what it takes, if any."""
        responses = {"200": ok} | {s: _ref("responses", s) for s in problems.split()}
        operation: dict[str, Any] = {
            "summary": summary,
            "parameters": [_ref("parameters", name) for name in parameters.split()],
            "responses": responses,
        }
        if body is not None:
            content = {"application/json": {"schema": body["schema"]}}
            operation["requestBody"] = {
                "required": True,
                "description": body["description"],
                "content": content,
            }
        return operation


def _public(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "security": [], "responses": responses}


def _paths(operations: _Operations, *, history: bool) -> dict[str, Any]:
    fields = _ref("schemas", Fields.__name__)
    paths = {
        COMMANDS: {"post": operations.command("type id command", fields)},
        QUERIES: {"post": operations.query("type id query", fields)},
        ENTITY: {"get": operations.state()},
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
        DOCS: {
            "get": _public(
                "This document for people: Swagger UI, served by the gateway",
                {"200": {"description": "The page", "content": {"text/html": {}}}},
            )
        },
    }
    if history:
        paths[HISTORY] = {"get": operations.history()}
        paths[TIMERS] = {"get": operations.timers()}
        paths[ENTITIES] = {"get": operations.listing()}
        paths[EVENTS] = {"get": operations.following()}
        paths[ADMIN_ENTITY] = {"delete": _erase_operation()}
        paths[RELEASE_TIMER] = {"post": _release_operation()}
        paths.update(quarantine_paths(lambda status: _ref("responses", status)))
    return paths


def _erase_operation() -> dict[str, Any]:
    """``DELETE /admin/entities/{type}/{id}`` (see ``_admin``): its own token, always."""
    counts = {"type": "integer", "minimum": 0}
    erasure = {
        "type": "object",
        "properties": {
            "entity_id": {"type": "string", "format": "uuid"},
            "entity_type": {"type": "string"},
            "version": {"type": "integer", "description": "the version its tombstone keeps"},
            **dict.fromkeys(
                (
                    *("events", "snapshots", "commands", "timers", "log_rows", "effects"),
                    "quarantined",
                ),
                counts,
            ),
        },
    }
    return {
        "summary": "Erase an entity for good (personal data): its events, snapshot, command"
        " ids and replies, timers and log rows go; a tombstone refuses every later command."
        " Needs the admin token (PACHYDERM_ADMIN_TOKEN); audited in the logs",
        "tags": ["admin"],
        "security": [{"admin": []}],
        "parameters": [_ref("parameters", name) for name in ("type", "id")],
        "responses": {
            "200": {
                "description": "Erased: how many rows of each kind went",
                "content": {"application/json": {"schema": erasure}},
            },
        }
        | {status: _ref("responses", status) for status in ("400", "401", "403", "404", "503")},
    }


def _release_operation() -> dict[str, Any]:
    """``POST /admin/entities/{type}/{id}/timers/{key}/release`` (see ``_admin``)."""
    released = {
        "type": "object",
        "properties": {
            "entity": {"type": "string", "description": "type/id"},
            "timer": {"type": "string"},
            "released": {"type": "boolean", "const": True},
        },
        "required": ["entity", "timer", "released"],
    }
    return {
        "summary": "Release a timer held after PACHYDERM_MAX_ATTEMPTS tries (a poison: it"
        " failed, hung or took its worker down each time): its tries start over and it fires"
        " within a second, as a risky fire. Needs the admin token (PACHYDERM_ADMIN_TOKEN);"
        " audited in the logs",
        "tags": ["admin"],
        "security": [{"admin": []}],
        "parameters": [_ref("parameters", name) for name in ("type", "id", "key")],
        "responses": {
            "200": {
                "description": "Released",
                "content": {"application/json": {"schema": released}},
            },
        }
        | {status: _ref("responses", status) for status in ("400", "401", "403", "404", "503")},
    }


def _described(operation: dict[str, Any], m: Message) -> dict[str, Any]:
    """``operation`` for the message ``m``: grouped by its entity type, identified by its
    schema's name (unique, as operation ids must be), described by its class's docstring."""
    summary = f"{m.name} ({m.entity} {m.kind})"
    described = {"tags": [m.entity], "operationId": m.component, **operation, "summary": summary}
    if m.cls.__doc__ and not m.cls.__doc__.startswith(f"{m.cls.__name__}("):  # a dataclass's
        described["description"] = m.cls.__doc__.strip()
    return described


def _app_paths(operations: _Operations, schemas: AppSchemas, *, history: bool) -> dict[str, Any]:
    """Per entity type: a path per command and per query, its state, its history and
    its pending timers (the last two where the gateway has a store)."""
    paths: dict[str, Any] = {}
    for entity in dict.fromkeys(m.entity for m in schemas.messages):
        base = ENTITY.replace("{type}", entity)
        state = schemas.ref(f"{entity}.state")
        for m in _routable(schemas.of(entity, "command")):
            operation = operations.command("id", schemas.ref(m.component), state)
            paths[f"{base}/commands/{quote(m.name, safe='')}"] = {"post": _described(operation, m)}
        for m in _routable(schemas.of(entity, "query")):
            operation = operations.query("id", schemas.ref(m.component))
            paths[f"{base}/queries/{quote(m.name, safe='')}"] = {"post": _described(operation, m)}
        paths[base] = {"get": {"tags": [entity], **operations.state(state)}}
        if history:
            events = _events(schemas, entity)
            paths[f"{base}/history"] = {"get": {"tags": [entity], **operations.history(events)}}
            paths[f"{base}/timers"] = {"get": {"tags": [entity], **operations.timers("id")}}
    return paths


def _routable(messages: list[Message]) -> list[Message]:
    """The messages a path can name: a ``/`` in a name would end the path's segment."""
    return [m for m in messages if "/" not in m.name]


def _events(schemas: AppSchemas, entity: str) -> dict[str, Any]:
    """One of the entity type's events: its data is the schema its name says."""
    return {
        "anyOf": [
            {"properties": {"name": {"const": m.name}, "data": schemas.ref(m.component)}}
            for m in schemas.of(entity, "event")
        ]
    }


def openapi_document(*, secured: bool, history: bool, app: App | None = None) -> dict[str, Any]:
    """The document for a gateway with authentication on or off, serving history or not;
    with ``app``, the schemas and paths of its entity types too."""
    problems = {
        status: _answer(model, about, "Retry-After" if status in _RETRY_AFTER else None)
        for status, (about, model) in _PROBLEMS.items()
    }
    operations = _Operations(secured=secured)
    paths = _paths(operations, history=history)
    schemas = _schemas()
    if app is not None:
        generated = app_schemas(app)
        paths |= _app_paths(operations, generated, history=history)
        schemas |= generated.schemas
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Pachyderm gateway",
            "version": "1",
            "description": "Commands, queries, state and history of event-sourced entities.",
        },
        "paths": paths,
        "components": {
            "parameters": parameters() | QUARANTINE_PARAMETERS,
            "schemas": schemas,
            "responses": problems,
        },
    }
    schemes: dict[str, Any] = {}
    if secured:
        schemes["bearer"] = {"type": "http", "scheme": "bearer"}
        document["security"] = [{"bearer": []}]
    if history:  # the admin routes come with the store
        schemes["admin"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "PACHYDERM_ADMIN_TOKEN",
        }
    if schemes:
        document["components"]["securitySchemes"] = schemes
    return document
