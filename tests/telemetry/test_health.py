"""A worker's health endpoints over real HTTP: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples import counter
from pachyderm import App
from pachyderm.cli._serve import readiness
from pachyderm.fleet import SoloMembership
from pachyderm.store import open_store
from pachyderm.telemetry import Check, HealthServer, Telemetry, install_telemetry
from pachyderm.telemetry import _checks as checks
from pachyderm.transport import InProcessTransport, Topology
from pachyderm.worker import Worker

from .conftest import Recorded

APP = App([counter.Counter])


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    store = await open_store("sqlite:///:memory:")
    await store.migrate()
    transport = InProcessTransport(Topology(partitions=2))
    try:
        yield Worker(APP, store, transport, SoloMembership("w"))
    finally:
        await transport.close()
        await store.close()


def client(server: HealthServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}")


async def test_a_worker_is_alive_at_once_and_ready_once_it_serves_its_partitions(
    worker: Worker, recorded: Recorded
) -> None:
    async with HealthServer(readiness(worker), host="127.0.0.1") as server, client(server) as http:
        alive = await http.get("/healthz")
        assert alive.status_code == 200
        assert alive.json()["status"] == "alive"
        assert alive.json()["uptime_seconds"] >= 0

        starting = await http.get("/readyz")
        assert starting.status_code == 503
        assert starting.json() == {
            "status": "not ready",
            "checks": {
                "consumers": "not consuming its assigned partitions",
                "database": "ok",
                "broker": "failed: TransportError",  # not started yet
            },
        }

        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        await worker.ready.wait()
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (200, "ready")

        metrics = await http.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
        assert families["pachyderm_partitions_owned"].samples[0].value == 2

        stop.set()
        await running
        leaving = await http.get("/readyz")
        assert leaving.status_code == 503
        assert leaving.json()["checks"]["consumers"] != "ok"


async def test_a_check_that_fails_or_hangs_makes_the_process_unready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checks, "CHECK_TIMEOUT", 0.05)

    async def fine() -> None:
        return None

    async def broken() -> None:
        raise ConnectionError("postgresql://user:secret@db refused")

    async def hanging() -> None:
        await asyncio.sleep(10)

    verdicts: dict[str, Check] = {"fine": fine, "broken": broken, "hanging": hanging}
    async with HealthServer(verdicts, host="127.0.0.1") as server, client(server) as http:
        answer = await http.get("/readyz")
    assert answer.status_code == 503
    # Served without authentication: the error's details stay in the log.
    assert answer.json()["checks"] == {
        "fine": "ok",
        "broken": "failed: ConnectionError",
        "hanging": "no answer within 0.05s",
    }


async def test_without_a_prometheus_reader_the_metrics_are_empty() -> None:
    install_telemetry(Telemetry())
    async with HealthServer({}, host="127.0.0.1") as server, client(server) as http:
        answer = await http.get("/metrics")
        assert (answer.status_code, answer.text) == (200, "")
        assert (await http.get("/readyz")).status_code == 200


async def test_a_taken_port_is_an_error_and_port_zero_picks_a_free_one() -> None:
    async with HealthServer({}, host="127.0.0.1") as server:
        assert server.port != 0
        with pytest.raises(OSError, match="in use"):
            await HealthServer({}, host="127.0.0.1", port=server.port).start()
        with socket.create_connection(("127.0.0.1", server.port)):
            pass
