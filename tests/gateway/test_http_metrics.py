"""The gateway's /metrics: HTTP requests by route template and status, and process metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from pachyderm import Settings
from pachyderm._embedded import EmbeddedFleet
from pachyderm.gateway import GatewayOptions, create_app
from pachyderm.telemetry import Telemetry, install_telemetry, setup_telemetry

from .serving import serving

DURATION = "http_server_request_duration_seconds"
COMMAND_ROUTE = "/entities/{type}/{id}/commands/{command}"


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    installed = setup_telemetry(Settings(otlp_endpoint=None), "pachyderm-gateway")
    yield installed
    installed.shutdown()
    install_telemetry(Telemetry())


@pytest.fixture
async def http(telemetry: Telemetry, fleet: EmbeddedFleet) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(fleet.client, None, GatewayOptions(tokens=None))) as http:
        yield http


async def scrape(http: httpx.AsyncClient) -> dict[str, list[Sample]]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    families = text_string_to_metric_families(response.text)
    return {family.name: family.samples for family in families}


def counts(samples: list[Sample]) -> dict[tuple[str, str, str], float]:
    """Request counts by (method, route, status)."""
    return {
        (
            s.labels["http_request_method"],
            s.labels["http_route"],
            s.labels["http_response_status_code"],
        ): s.value
        for s in samples
        if s.name.endswith("_count")
    }


async def test_requests_are_timed_by_route_template_and_status(http: httpx.AsyncClient) -> None:
    for entity in ("key:a", "key:b"):
        ok = await http.post(f"/entities/counter/{entity}/commands/Increment", json={"amount": 1})
        assert ok.status_code == 200, ok.text
    unknown = await http.post("/entities/counter/key:a/commands/Nope", json={})
    assert unknown.status_code == 404
    await http.get("/nowhere")
    metrics = await scrape(http)
    by_request = counts(metrics[DURATION])
    assert by_request[("POST", COMMAND_ROUTE, "200")] == 2
    assert by_request[("POST", COMMAND_ROUTE, "404")] == 1
    # No raw path, so no entity id, in any label; an unmatched path has no route.
    assert not any("key:" in route for _, route, _ in by_request)
    assert by_request[("GET", "", "404")] == 1


async def test_a_bug_counts_as_the_500_it_is_answered_with(http: httpx.AsyncClient) -> None:
    broken = await http.post("/entities/fragile/key:f/commands/Explode", json={})
    assert broken.status_code == 500
    metrics = await scrape(http)
    assert counts(metrics[DURATION])[("POST", COMMAND_ROUTE, "500")] == 1


async def test_the_process_is_measured(http: httpx.AsyncClient) -> None:
    metrics = await scrape(http)
    cpu = {s.labels["cpu_mode"]: s.value for s in metrics["process_cpu_time_seconds"]}
    assert cpu["user"] > 0
    [memory] = metrics["process_memory_usage_bytes"]
    assert memory.value > 1_000_000
    [descriptors] = metrics["process_unix_file_descriptor_count"]
    assert descriptors.value >= 3
