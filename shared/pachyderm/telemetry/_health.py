"""Health over HTTP: liveness, readiness and Prometheus metrics.

The routes serve workers (:class:`HealthServer`) and the gateway alike.
They run on the process's event loop, so an answer from ``/healthz`` proves
the loop is responsive. Their JSON bodies are :class:`Liveness` and
:class:`Readiness`, from which the gateway's OpenAPI document takes their schemas.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._serving import listen, serve
from ._checks import Check, readiness
from ._prometheus import CONTENT_TYPE
from ._telemetry import installed


class Liveness(BaseModel):
    """The process and its event loop answer."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["alive"]
    uptime_seconds: float


class Readiness(BaseModel):
    """Whether the process can do its work: each check's verdict."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(description="By check: ok, or why not")


def metrics_response() -> Response:
    """The installed telemetry's metrics in Prometheus's text format (empty without a
    :class:`PrometheusReader`)."""
    reader = installed().prometheus
    return Response(reader.render() if reader is not None else b"", media_type=CONTENT_TYPE)


def metrics_route(path: str = "/metrics") -> Route:
    """``GET path``: :func:`metrics_response`, for a Starlette app."""

    async def metrics(_: Request) -> Response:
        return metrics_response()

    return Route(path, metrics, methods=["GET"])


def health_routes(checks: Mapping[str, Check]) -> list[Route]:
    """``GET /healthz``, ``/readyz`` and ``/metrics``, for a Starlette app.

    ``/healthz`` answers 200 with the uptime; ``/readyz`` runs ``checks``
    (read on every request, so they may change) and answers 200 when all
    pass, else 503, with each check's verdict in the JSON body;
    ``/metrics`` is :func:`metrics_route`.
    """
    started = time.monotonic()

    async def healthz(_: Request) -> Response:
        liveness = Liveness(status="alive", uptime_seconds=round(time.monotonic() - started, 3))
        return JSONResponse(liveness.model_dump(mode="json"))

    async def readyz(_: Request) -> Response:
        verdicts = await readiness(checks)
        ready = not any(verdicts.values())
        body = Readiness(
            status="ready" if ready else "not ready",
            checks={name: verdict or "ok" for name, verdict in verdicts.items()},
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        metrics_route(),
    ]


class HealthServer:
    """:func:`health_routes` served on the running event loop; an async context manager.

    ``port`` 0 picks a free one; :attr:`port` tells which once started. ``host`` is
    loopback by default, as the gateway's (``Settings.gateway_host``): nothing listens
    beyond the machine unless told to (``0.0.0.0`` in a container).
    """

    def __init__(self, checks: Mapping[str, Check], *, host: str = "127.0.0.1", port: int = 0):
        self._app = Starlette(routes=health_routes(checks))
        self._address = (host, port)
        self._stop = asyncio.Event()
        self._serving: asyncio.Task[None] | None = None
        self.port = port

    async def start(self) -> int:
        """Listen and serve; returns the port. Raises :class:`OSError` if it is taken."""
        # Listening already: connections queue until uvicorn accepts them.
        listener = listen(*self._address)
        self.port = listener.getsockname()[1]
        self._stop.clear()
        # No access log: probes every few seconds would drown the worker's own lines.
        self._serving = asyncio.create_task(
            serve(self._app, listener, self._stop, grace=1, access_log=False)
        )
        return self.port

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        if self._serving is not None:
            self._stop.set()
            await self._serving
        self._serving = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
