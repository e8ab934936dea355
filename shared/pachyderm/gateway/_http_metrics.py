"""HTTP server metrics of the gateway: OpenTelemetry's ASGI instrumentation, outermost.

Each request's duration (``http.server.request.duration``, seconds) is
recorded by method, ``http.route`` and ``http.response.status_code`` into
the meter provider installed when the gateway serves its first request
(nothing, without one). The route is the template that matched
(``/entities/{type}/{id}``), never the path, so entity ids make no new
series; a path no route matches has no route attribute.

The instrumentation wraps the whole app, outside Starlette's error
middleware, so an unexpected error counts as the 500 it is answered with.
It records no spans: the gateway's own SERVER span per entity request
(``_request_tracing``) is the one a trace shows.

OpenTelemetry's stable HTTP conventions are chosen for the process unless
``OTEL_SEMCONV_STABILITY_OPT_IN`` says otherwise (the instrumentation reads
it once per process); the older ones name the metric
``http.server.duration`` (milliseconds) and carry the template as
``http.target``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import NoOpTracer
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp

from ..telemetry._telemetry import installed

_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
ROUTE = "http.route"


class InstrumentedStarlette(Starlette):
    """A Starlette app whose middleware stack is measured by the ASGI instrumentation."""

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        meter_provider = installed().meter_provider
        if meter_provider is None:
            return stack  # nothing to report to: no per-request work at all
        os.environ.setdefault(_OPT_IN, "http")
        routes = self.router.routes
        return OpenTelemetryMiddleware(
            stack,
            default_span_details=lambda scope: _route_details(routes, scope),
            meter_provider=meter_provider,
            tracer=NoOpTracer(),
            exclude_spans=["receive", "send"],
        )


def _route_details(
    routes: Sequence[BaseRoute], scope: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    """The span name and the ``http.route`` attribute of the route ``scope`` asks for.

    As Starlette routes: the first full match, else the first route matching all but
    the method (answered 405).
    """
    method = scope.get("method", "HTTP")
    partial: str | None = None
    for route in routes:
        match, _ = route.matches(scope)
        path = getattr(route, "path", None)
        if not isinstance(path, str) or match is Match.NONE:
            continue
        if match is Match.FULL:
            return f"{method} {path}", {ROUTE: path}
        partial = partial or path
    return (f"{method} {partial}", {ROUTE: partial}) if partial else (method, {})
