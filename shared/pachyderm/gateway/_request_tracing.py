"""A SERVER span per entity request, continuing the caller's W3C trace.

The span is current while the endpoint runs, so the client's ``publish``
span becomes its child and one trace runs from the HTTP caller through the
workers to the effect handlers.
"""

from __future__ import annotations

from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .._errors import PachydermError
from ..telemetry import traced
from ..telemetry._conventions import ENTITY_ID, ENTITY_TYPE, ERROR_TYPE
from ._auth import Endpoint
from ._problems import answer_http_error, answer_pachyderm_error

# OpenTelemetry's HTTP semantic conventions (https://opentelemetry.io/docs/specs/semconv/http/).
METHOD = "http.request.method"
ROUTE = "http.route"
STATUS_CODE = "http.response.status_code"


def traced_endpoint(method: str, route: str, endpoint: Endpoint) -> Endpoint:
    """``endpoint`` inside a SERVER span named ``"<method> <route>"``.

    ``route`` is the template (``/entities/{type}/{id}``), never the path: a
    span name must not carry ids. The endpoint's problems are answered here,
    as the app's exception handlers would, so the span knows the status.
    """
    name = f"{method} {route}"

    async def serve(request: Request) -> Response:
        # Without tracing, traced() is a shared no-op context: no span, no attributes.
        with traced(name, kind=SpanKind.SERVER, carrier=request.headers) as span:
            if span.is_recording():
                _describe(span, request, method, route)
            response = await _answer(request, endpoint)
            if span.is_recording():
                _conclude(span, response.status_code)
            return response

    return serve


async def _answer(request: Request, endpoint: Endpoint) -> Response:
    """The endpoint's response, or the problem it raised as a response."""
    try:
        return await endpoint(request)
    except HTTPException as error:
        return await answer_http_error(request, error)
    except PachydermError as error:
        return await answer_pachyderm_error(request, error)


def _describe(span: Span, request: Request, method: str, route: str) -> None:
    span.set_attributes(
        {
            METHOD: method,
            ROUTE: route,
            ENTITY_TYPE: request.path_params["type"],
            # As the caller wrote it (a UUID or key:<natural key>): an attribute, not a name.
            ENTITY_ID: request.path_params["id"],
        }
    )


def _conclude(span: Span, status: int) -> None:
    span.set_attribute(STATUS_CODE, status)
    # A server span fails on 5xx only: a 4xx is the caller's error, not the gateway's.
    if status >= 500:
        span.set_attribute(ERROR_TYPE, str(status))
        span.set_status(Status(StatusCode.ERROR))
