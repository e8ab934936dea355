"""Liveness, readiness and metrics over HTTP (readiness failing: see test_entities)."""

from __future__ import annotations

import httpx

from pachyderm._embedded import EmbeddedFleet
from pachyderm.gateway import GatewayOptions, create_app

from .serving import serving


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
