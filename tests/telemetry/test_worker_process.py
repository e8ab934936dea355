"""A real worker process on RabbitMQ and PostgreSQL: its health endpoints, its metrics,
its part of a caller's trace, and its silence about passwords."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples import counter
from pachyderm.testing import ProcessFleet, process_fleet

from .collector import collector
from .conftest import Recorded

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def running(
    tmp_path: Path, namespace: str, postgres_dsn: str, rabbitmq_url: str
) -> AsyncIterator[ProcessFleet]:
    async with process_fleet(
        tmp_path,
        namespace,
        postgres_dsn,
        rabbitmq_url,
        app="examples.demo:APP",
        partitions=4,
        cwd=ROOT,
    ) as fleet:
        yield fleet


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def ready(http: httpx.AsyncClient, timeout: float = 20.0) -> httpx.Response:
    """``/readyz`` once it answers 200 (the process may not even listen yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = await http.get("/readyz")
            if answer.status_code == 200:
                return answer
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never became ready")


async def test_a_worker_process_is_ready_measures_and_continues_the_callers_trace(
    running: ProcessFleet, recorded: Recorded
) -> None:
    port = free_port()
    namespace = running.topology.namespace
    with collector() as received:
        worker = running.start_worker(
            "w1", health_port=str(port), otlp_endpoint=received.url, log_format="json"
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await ready(http)).json()["checks"] == {
                "consumers": "ok",
                "database": "ok",
                "broker": "ok",
            }
            async with running.client() as client:
                await client.call(counter.Counter.ref("c"), counter.Increment(amount=2))
            metrics = await http.get("/metrics")
        worker.process.send_signal(signal.SIGTERM)  # exports its last spans as it stops
        worker.process.wait(15)

    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    assert families["pachyderm_partitions_owned"].samples[0].value == 4
    [ok] = families["pachyderm_commands"].samples
    assert (ok.labels, ok.value) == (
        {"entity_type": "counter", "kind": "command", "outcome": "ok"},
        1,
    )

    [publish] = recorded.named(f"publish {namespace}.commands")
    [process] = received.named(f"process {namespace}.commands")
    assert process.trace_id == publish.context.trace_id
    assert process.parent_id == publish.context.span_id
    assert process.service == "pachyderm-worker"
    [commit] = received.named("commit")
    assert (commit.trace_id, commit.attributes["db.system.name"]) == (
        publish.context.trace_id,
        "postgresql",
    )
    lines = worker.log.read_text().splitlines()
    assert lines
    assert all(json.loads(line)["level"] for line in lines)


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "guest"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


async def test_a_worker_never_prints_the_passwords_in_its_urls(
    running: ProcessFleet, postgres_dsn: str, rabbitmq_url: str
) -> None:
    database_secret, broker_secret = f"db-{uuid.uuid4().hex}", f"mq-{uuid.uuid4().hex}"
    worker = running.start_worker(
        "w1",
        health_port="0",
        database_url=with_password(postgres_dsn, database_secret),
        amqp_url=with_password(rabbitmq_url, broker_secret),  # refused: it fails
    )
    assert worker.process.wait(30) != 0
    output = worker.log.read_text()
    assert "unavailable" in output
    assert database_secret not in output
    assert broker_secret not in output
