"""examples/fastapi_service.py over HTTP in process: its routes on an embedded fleet
(the embedded client in place of the lifespan's), and as deployed, its lifespan
connecting to worker processes with the settings of the environment."""

from __future__ import annotations

import httpx
import pytest

from examples import counter
from examples.fastapi_service import api, pachyderm_client
from pachyderm import App, Client, EmbeddedFleet, PachydermError
from pachyderm.testing import ProcessFleet


@pytest.fixture
def pachyderm_app() -> App:
    return counter.app


@pytest.fixture
def pachyderm_app_spec() -> str:
    return "examples.counter:app"


def over_http() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://counters")


async def test_the_routes_call_the_fleet(pachyderm_fleet: EmbeddedFleet) -> None:
    api.dependency_overrides[pachyderm_client] = lambda: pachyderm_fleet.client
    try:
        async with over_http() as http:
            added = await http.post("/counters/visits/increment", params={"amount": 2})
            assert (added.status_code, added.json()) == (200, {"count": 2})
            # A retry with the same key applies once and gets the first answer.
            retry = {"Idempotency-Key": "visit-2"}
            first = await http.post("/counters/visits/increment", headers=retry)
            again = await http.post("/counters/visits/increment", headers=retry)
            assert first.json() == again.json() == {"count": 3}
            read = await http.get("/counters/visits")
            assert (read.status_code, read.json()) == (200, {"count": 3})
    finally:
        api.dependency_overrides.clear()


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_the_lifespan_connects_to_the_fleet_and_closes(
    pachyderm_process_fleet: ProcessFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = pachyderm_process_fleet.settings()
    monkeypatch.setenv("PACHYDERM_AMQP_URL", fleet.amqp_url.get_secret_value())
    monkeypatch.setenv("PACHYDERM_NAMESPACE", fleet.namespace)
    monkeypatch.setenv("PACHYDERM_PARTITIONS", str(fleet.partitions))
    async with api.router.lifespan_context(api), over_http() as http:
        added = await http.post("/counters/visits/increment", params={"amount": 5})
        assert (added.status_code, added.json()) == (200, {"count": 5})
        client: Client = api.state.pachyderm
    with pytest.raises(PachydermError, match="not started"):
        await client.query(counter.Counter.ref("visits"))
