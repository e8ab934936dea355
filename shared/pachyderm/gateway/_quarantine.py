"""The gateway's admin routes over the quarantine (see :mod:`pachyderm._quarantine_admin`):

* ``GET /admin/quarantine``: the quarantined commands, oldest first;
* ``GET /admin/quarantine/{entity_id}/{command_id}``: one, with the command as received;
* ``POST /admin/quarantine/{entity_id}/{command_id}/resume`` and ``.../skip``: the
  operator's decision (audited), carried out by the partition's owner.

Like every admin route they answer only the admin token (``PACHYDERM_ADMIN_TOKEN``):
the admission check is the admin endpoints' own, passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import _quarantine_admin as admin
from .._errors import InvalidEntityIdError
from ..store import EventStore, NotQuarantinedError
from ._problems import Problem
from ._request_tracing import traced_endpoint

QUARANTINE = "/admin/quarantine"
QUARANTINED = f"{QUARANTINE}/{{entity_id}}/{{command_id}}"
DECISIONS = {decision: f"{QUARANTINED}/{decision}" for decision in ("resume", "skip")}
PARAMETERS = {
    "entity_id": {
        "name": "entity_id",
        "in": "path",
        "required": True,
        "description": "The id of the quarantined command's entity (a UUID)",
        "schema": {"type": "string", "format": "uuid"},
    },
    "command_id": {
        "name": "command_id",
        "in": "path",
        "required": True,
        "description": "The quarantined command's id",
        "schema": {"type": "string"},
    },
}
""":data:`quarantine_paths`' own path parameters, for components/parameters."""


class QuarantineEndpoints:
    """The quarantine's admin routes on ``store``; ``admit`` refuses a request that does
    not bear the admin token (raising a problem)."""

    def __init__(self, store: EventStore, admit: Callable[[Request], None]) -> None:
        self.store = store
        self._admit = admit

    def routes(self) -> list[Route]:
        return [
            Route(QUARANTINE, traced_endpoint("GET", QUARANTINE, self.listing), methods=["GET"]),
            Route(QUARANTINED, traced_endpoint("GET", QUARANTINED, self.show), methods=["GET"]),
            *(
                Route(
                    path, traced_endpoint("POST", path, self._decider(decision)), methods=["POST"]
                )
                for decision, path in DECISIONS.items()
            ),
        ]

    async def listing(self, request: Request) -> Response:
        self._admit(request)
        rows = await admin.listing(self.store)
        return JSONResponse({"quarantined": [admin.describe(row) for row in rows]})

    async def show(self, request: Request) -> Response:
        self._admit(request)
        entity, command_id = _key(request)
        try:
            row = await admin.find(self.store, entity, command_id)
        except NotQuarantinedError as error:
            raise Problem(404, str(error)) from None
        return JSONResponse(admin.describe(row, command=True))

    def _decider(self, decision: str) -> Callable[[Request], Any]:
        async def decide(request: Request) -> Response:
            self._admit(request)
            entity, command_id = _key(request)
            client = request.client.host if request.client else "unknown"
            try:
                row = await admin.decide(
                    self.store,
                    entity,
                    command_id,
                    decision,
                    actor=f"gateway admin token from {client}",
                )
            except NotQuarantinedError as error:
                raise Problem(404, str(error)) from None
            return JSONResponse(admin.describe(row))

        return decide


def _key(request: Request) -> tuple[Any, str]:
    try:
        entity = admin.entity_id(request.path_params["entity_id"])
    except InvalidEntityIdError as error:
        raise Problem(400, str(error)) from None
    return entity, request.path_params["command_id"]


def quarantine_paths(problem: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI paths of these routes; ``problem(status)``: the document's answer of
    that status (a problem document)."""
    row = {
        "type": "object",
        "properties": {
            "entity_id": {"type": "string", "format": "uuid"},
            "command_id": {"type": "string"},
            "entity_type": {"type": "string"},
            "partition": {"type": "integer"},
            "policy": {"type": "string", "enum": ["park", "skip"]},
            "status": {
                "type": "string",
                "enum": ["quarantined", "resuming", "skipping", "skipped"],
            },
            "attempts": {"type": "integer"},
            "reason": {"type": "string"},
            "parked": {"type": "integer", "description": "later commands of the entity waiting"},
            "quarantined_at": {"type": ["string", "null"]},
            "decided_at": {"type": ["string", "null"]},
            "command": {"type": "object", "description": "the command as received (show)"},
        },
        "required": ["entity_id", "command_id", "status", "attempts", "policy", "parked"],
    }
    keys = [{"$ref": f"#/components/parameters/{name}"} for name in PARAMETERS]

    def operation(summary: str, status: str, schema: dict[str, Any], *more: str) -> dict[str, Any]:
        return {
            "summary": summary + ". Needs the admin token (PACHYDERM_ADMIN_TOKEN)",
            "tags": ["admin"],
            "security": [{"admin": []}],
            "responses": {
                status: {
                    "description": summary,
                    "content": {"application/json": {"schema": schema}},
                }
            }
            | {status: problem(status) for status in ("401", "403", *more)},
        }

    listed = {"type": "object", "properties": {"quarantined": {"type": "array", "items": row}}}
    paths: dict[str, Any] = {
        QUARANTINE: {"get": operation("The quarantined commands, oldest first", "200", listed)},
        QUARANTINED: {
            "get": {
                **operation(
                    "A quarantined command, with the command as received", "200", row, "400", "404"
                ),
                "parameters": keys,
            }
        },
    }
    for decision, path in DECISIONS.items():
        what = (
            "Resume a quarantined command: it runs again, then its entity's parked commands"
            if decision == "resume"
            else "Skip a quarantined command: it stays unapplied; its entity's parked commands run"
        )
        paths[path] = {
            "post": {
                **operation(
                    what + " (audited; the partition's owner carries it out)",
                    "200",
                    row,
                    "400",
                    "404",
                ),
                "parameters": keys,
            }
        }
    return paths
