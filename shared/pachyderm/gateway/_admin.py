"""The gateway's admin routes, for operators: erasing an entity (personal data),
releasing a timer held after its tries (a poison timer: see
:mod:`pachyderm.worker._timer_poison`), and the quarantine of poison commands
(:mod:`._quarantine`).

Invariant: an admin route answers only a request bearing the admin token
(``PACHYDERM_ADMIN_TOKEN``), compared in constant time; with no admin token set
every admin route answers 403, whatever other tokens the gateway knows, and
whether or not the gateway's own authentication is on. Admin routes need the
store (a gateway with a PostgreSQL database); without one there are none.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import _erasure
from .._app import App
from .._reference import Ref
from ..store import EventStore
from ._problems import Problem
from ._quarantine import QuarantineEndpoints
from ._request_tracing import traced_endpoint
from ._requests import entity_ref

ADMIN_ENTITY = "/admin/entities/{type}/{id}"
RELEASE_TIMER = ADMIN_ENTITY + "/timers/{key}/release"
_REALM = 'Bearer realm="pachyderm-admin"'

log = logging.getLogger("pachyderm.timers")


class AdminEndpoints:
    """Operators' routes on ``store``, open to the bearer of ``token`` only (None: closed);
    with ``app``, an unknown entity type is refused before the store is asked."""

    def __init__(self, store: EventStore, token: str | None, app: App | None = None) -> None:
        self.store = store
        self.app = app
        self._token = token.encode() if token else None

    def routes(self) -> list[Route]:
        return [
            Route(
                ADMIN_ENTITY,
                traced_endpoint("DELETE", ADMIN_ENTITY, self.erase),
                methods=["DELETE"],
            ),
            Route(
                RELEASE_TIMER,
                traced_endpoint("POST", RELEASE_TIMER, self.release_timer),
                methods=["POST"],
            ),
            *QuarantineEndpoints(self.store, self._admit).routes(),
        ]

    def _admit(self, request: Request) -> None:
        if self._token is None:
            raise Problem(403, "admin routes are off: set PACHYDERM_ADMIN_TOKEN to use them")
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Problem(
                401,
                "send the admin token: Authorization: Bearer <PACHYDERM_ADMIN_TOKEN>",
                headers={"WWW-Authenticate": _REALM},
            )
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            raise Problem(
                401,
                "the bearer token is not the admin token",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )

    async def release_timer(self, request: Request) -> Response:
        """``POST /admin/entities/{type}/{id}/timers/{key}/release``: let a held timer fire
        again (its tries start over; the partition's owner finds it within a second)."""
        self._admit(request)
        ref, key = self._entity(request), request.path_params["key"]
        if not await self.store.release_timer(ref.id, key):
            raise Problem(404, f"{ref} has no pending timer {key!r}")
        client = request.client.host if request.client else "unknown"
        log.info(
            "timer %r of %s released by the gateway admin token from %s",
            key,
            ref,
            client,
            extra={"event": "timer.released", "entity_id": str(ref.id), "timer_key": key},
        )
        return JSONResponse({"entity": str(ref), "timer": key, "released": True})

    def _entity(self, request: Request) -> Ref:
        ref = entity_ref(request)
        if self.app is not None:
            self.app.entity_type(ref.type)  # an unknown type is answered 404 here
        return ref

    async def erase(self, request: Request) -> Response:
        """``DELETE /admin/entities/{type}/{id}``: erase the entity for good, leaving its
        tombstone; answers what went, in row counts (audited in the logs)."""
        self._admit(request)
        ref = self._entity(request)
        client = request.client.host if request.client else "unknown"
        erasure = await _erasure.erase(self.store, ref, actor=f"gateway admin token from {client}")
        return JSONResponse(asdict(erasure) | {"entity_id": str(erasure.entity_id)})
