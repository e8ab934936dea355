"""The gateway as an ASGI application (Starlette)."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .._app import App
from .._client import Client
from .._errors import PachydermError
from ..store import EventStore
from ..telemetry import Check, broker_check, database_check, health_routes
from ._admin import AdminEndpoints
from ._auth import Guard
from ._docs import docs_routes
from ._http_metrics import InstrumentedStarlette
from ._openapi import OPENAPI, openapi_document
from ._options import GatewayOptions
from ._problems import answer_http_error, answer_pachyderm_error, answer_unexpected
from ._routes import EntityEndpoints


def create_app(
    client: Client,
    store: EventStore | None,
    options: GatewayOptions,
    *,
    app: App | None = None,
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The HTTP gateway in front of ``client`` (started), reading histories from ``store``.

    The gateway needs no entity classes: commands travel by name, as plain
    data. Given the ``app``, it answers unknown names and invalid fields at
    once. Without a ``store`` there is no history route, and readiness does
    not check a database. ``/healthz``, ``/readyz`` and ``/metrics`` are the
    workers' (:func:`pachyderm.telemetry.health_routes`). ``routes`` are
    served as given, without authentication, and are not in ``/openapi.json``, which
    ``/docs`` renders (with the app, it describes each of its messages).
    Requests are measured (duration by route template and status) into the
    telemetry installed when the first request arrives.
    """
    guard = Guard(options.tokens, options.hosts)
    admin = AdminEndpoints(store, options.admin_token, app).routes() if store is not None else []
    entities = EntityEndpoints(client, store, app, options.max_body, options.max_streams)
    checks: dict[str, Check] = {"broker": broker_check(client.transport)}
    if store is not None:
        checks["database"] = database_check(store)
    document = openapi_document(
        secured=options.tokens is not None, history=store is not None, app=app
    )

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    gateway = InstrumentedStarlette(
        routes=[
            *entities.routes(guard),
            *admin,
            *health_routes(checks),
            Route(OPENAPI, openapi, methods=["GET"]),
            *docs_routes(),
            *routes,
        ],
        exception_handlers={
            HTTPException: answer_http_error,
            PachydermError: answer_pachyderm_error,
            Exception: answer_unexpected,
        },
    )
    # A path with a slash too many is not found (a problem document), not
    # redirected: API callers should not follow redirects to another resource.
    gateway.router.redirect_slashes = False
    return gateway
