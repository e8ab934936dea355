"""Liveness, readiness and metrics over HTTP (readiness failing: see test_entities)."""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pachyderm._embedded import EmbeddedFleet
from pachyderm.gateway import GatewayOptions, create_app

from .serving import problem, serving


async def test_alive_and_ready(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json()["status"] == "alive"
    ready = await http.get("/readyz")
    assert ready.json() == {"status": "ready", "checks": {"broker": "ok", "database": "ok"}}


async def test_without_a_store_readiness_checks_the_broker_only(fleet: EmbeddedFleet) -> None:
    async with serving(create_app(fleet.client, None, GatewayOptions(tokens=None))) as http:
        assert (await http.get("/readyz")).json()["checks"] == {"broker": "ok"}
        assert (await http.get("/entities/counter/key:c/history")).status_code == 404


async def test_metrics_are_served(http: httpx.AsyncClient) -> None:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


async def test_extra_routes_are_served_and_a_bug_is_a_bare_500(fleet: EmbeddedFleet) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("password=hunter2")

    extra = [Route("/broken", broken)]
    asgi = create_app(fleet.client, None, GatewayOptions(tokens=None), routes=extra)
    async with serving(asgi) as http:
        response = await http.get("/broken")
    assert problem(response, 500)["detail"] == "internal error"
    assert "hunter2" not in response.text
