"""Real processes on RabbitMQ and PostgreSQL: a worker and an effect dispatcher, their
health endpoints and metrics, one trace across them, and no password in their output."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples import counter
from pachyderm.testing import ProcessFleet

from ..integration.harness import fleet_fixture
from ..waiting import eventually
from .collector import collector
from .conftest import Recorded

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[2]
APP = "examples.demo:APP"


running = fleet_fixture(APP, 4, name="running")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def effect_dispatcher(fleet: ProcessFleet, log: Path, **settings: str) -> AsyncIterator[None]:
    """``pachyderm effects`` for the fleet's app; stopped with SIGTERM on exit, and its
    queue deleted."""
    environment = {
        **os.environ,
        "PACHYDERM_AMQP_URL": fleet.amqp_url,
        "PACHYDERM_NAMESPACE": fleet.topology.namespace,
        # It declares the topology too: with another partition count, commands would
        # go to queues nobody consumes.
        "PACHYDERM_PARTITIONS": str(fleet.topology.partitions),
        **{f"PACHYDERM_{key.upper()}": value for key, value in settings.items()},
    }
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "pachyderm", "effects", APP),
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)  # it exports its last spans as it stops
        await asyncio.wait_for(process.wait(), 15)
        async with await aio_pika.connect(fleet.amqp_url) as connection:
            channel = await connection.channel()
            await channel.queue_delete(fleet.topology.effects_queue("handlers"))


async def ready(port: int, timeout: float = 20.0) -> dict[str, str]:
    """The checks of ``/readyz`` once it answers 200 (the process may not listen yet)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        while time.monotonic() < deadline:
            try:
                answer = await http.get("/readyz")
                if answer.status_code == 200:
                    return dict(answer.json()["checks"])
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing ready on port {port}")


async def test_one_trace_crosses_caller_worker_and_effect_dispatcher_processes(
    running: ProcessFleet, recorded: Recorded, tmp_path: Path
) -> None:
    namespace = running.topology.namespace
    worker_port, effects_port = free_port(), free_port()
    mailer_log = tmp_path / "effects.log"
    with collector() as received:
        worker = running.start_worker(
            "w1", health_port=str(worker_port), otlp_endpoint=received.url, log_format="json"
        )
        async with effect_dispatcher(
            running, mailer_log, health_port=str(effects_port), otlp_endpoint=received.url
        ):
            assert await ready(worker_port) == {"consumers": "ok", "database": "ok", "broker": "ok"}
            assert await ready(effects_port) == {"broker": "ok"}
            async with running.client() as client:
                await client.call(counter.Counter.ref("c"), counter.Increment(amount=12))

            async def mailed() -> bool:
                return "counter crossed 10" in mailer_log.read_text()

            await eventually(mailed, timeout=10)
            async with httpx.AsyncClient() as http:
                metrics = await http.get(f"http://127.0.0.1:{worker_port}/metrics")
        worker.process.send_signal(signal.SIGTERM)  # exports its last spans as it stops
        worker.process.wait(15)

    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    assert families["pachyderm_partitions_owned"].samples[0].value == 4
    [ok] = families["pachyderm_commands"].samples
    assert (ok.labels, ok.value) == (
        {"entity_type": "counter", "kind": "command", "outcome": "ok"},
        1,
    )

    [publish] = recorded.named(f"publish {namespace}.commands")  # in this process
    trace_id = publish.context.trace_id
    [process] = received.named(f"process {namespace}.commands")
    [commit] = received.named("commit")
    [effect_publish] = received.named(f"publish {namespace}.effects")
    [effect_process] = received.named(f"process {namespace}.effects")
    assert {span.trace_id for span in (process, commit, effect_publish, effect_process)} == {
        trace_id
    }
    assert process.parent_id == publish.context.span_id
    assert effect_process.parent_id == effect_publish.span_id
    assert (process.service, effect_process.service) == ("pachyderm-worker", "pachyderm-effects")
    assert commit.attributes["db.system.name"] == "postgresql"
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


async def test_a_worker_on_any_free_port_writes_the_port_it_picked_to_its_port_file(
    running: ProcessFleet, tmp_path: Path
) -> None:
    port_file = tmp_path / "health.port"
    running.start_worker("w1", health_port="0", health_port_file=str(port_file))

    async def written() -> bool:
        return port_file.exists()

    await eventually(written, timeout=30, interval=0.05)
    port = int(port_file.read_text())
    assert port != 0
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{port}/healthz")
    assert answer.status_code == 200
