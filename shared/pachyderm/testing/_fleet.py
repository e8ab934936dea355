"""Real worker processes for tests and benchmarks: a namespace of their own on a
real RabbitMQ and PostgreSQL, workers started, killed and stopped as processes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from .._client import Client
from .._loading import load_app
from .._settings import Settings
from ..store import PostgresEventStore
from ..transport import RabbitMQTransport, Topology

_SERVING = re.compile(r"serving partitions \[([0-9, ]*)\]")


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def owned(self) -> set[int] | None:
        """The partitions it last said it serves (None before it said anything)."""
        found = _SERVING.findall(self.log.read_text(errors="replace"))
        if not found:
            return None
        return {int(p) for p in found[-1].split(",") if p.strip()}

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


class ProcessFleet:
    """Worker processes of one namespace, plus a client to call them."""

    def __init__(
        self,
        folder: Path,
        namespace: str,
        dsn: str,
        amqp_url: str,
        *,
        partitions: int,
        app_spec: str,
        cwd: Path,
    ) -> None:
        self.folder = folder
        self.app_spec = app_spec
        self.cwd = cwd
        self.topology = Topology(namespace, partitions)
        self.dsn = dsn
        self.amqp_url = amqp_url
        self.workers: list[WorkerProcess] = []

    def environment(self, **settings: str) -> dict[str, str]:
        """This process's environment with the fleet's settings (broker, database,
        namespace, partition count), and ``settings`` as ``PACHYDERM_*`` variables."""
        return {
            **os.environ,
            "PACHYDERM_DATABASE_URL": self.dsn,
            "PACHYDERM_AMQP_URL": self.amqp_url,
            "PACHYDERM_NAMESPACE": self.topology.namespace,
            "PACHYDERM_PARTITIONS": str(self.topology.partitions),
            **{f"PACHYDERM_{key.upper()}": value for key, value in settings.items()},
        }

    async def command(self, *arguments: str) -> tuple[int, str]:
        """Run ``pachyderm *arguments`` on the fleet, as an operator would; its exit status
        and output (stdout and stderr together)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pachyderm",
            *arguments,
            cwd=self.cwd,
            env=self.environment(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        assert process.returncode is not None
        return process.returncode, output.decode()

    def start_worker(self, name: str, *, app: str | None = None, **settings: str) -> WorkerProcess:
        """Start a worker process serving the fleet's app, or ``app`` (``module:attribute``:
        another version of it, as during a rolling deploy); ``settings`` as
        ``PACHYDERM_*`` variables."""
        log = self.folder / f"{name}.log"
        # Any free port unless told: a taken health port stops a worker, and the
        # workers of a fleet (and of other tests) share this host.
        environment = self.environment(**{"worker_id": name, "health_port": "0", **settings})
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "pachyderm", "worker", app or self.app_spec],
                cwd=self.cwd,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(name, process, log)
        self.workers.append(worker)
        return worker

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.process.poll() is None]

    async def balanced(self, timeout: float = 20.0) -> float:
        """Wait until the live workers serve every partition exactly once; seconds waited."""
        started = time.monotonic()
        everything = set(range(self.topology.partitions))
        while time.monotonic() - started < timeout:
            owned = [w.owned() for w in self.live()]
            if all(o is not None for o in owned):
                flat = [p for o in owned if o is not None for p in o]
                if sorted(flat) == sorted(everything):
                    return time.monotonic() - started
            await asyncio.sleep(0.05)
        logs = {w.name: w.log.read_text()[-2000:] for w in self.workers}
        raise AssertionError(f"partitions never balanced: {logs}")

    async def serving_everything(self, timeout: float = 20.0) -> None:
        """Wait until every live worker serves every partition (overlapping fleets)."""
        everything = set(range(self.topology.partitions))
        deadline = time.monotonic() + timeout
        while any(w.owned() != everything for w in self.live()):
            if time.monotonic() > deadline:
                raise AssertionError("workers did not all start serving")
            await asyncio.sleep(0.05)

    def settings(self, **overrides: object) -> Settings:
        """Settings that reach this fleet (its broker, database, namespace and partition
        count), e.g. for ``Client.connect`` in the service under test; calls wait 30 s."""
        fleet: dict[str, object] = {
            "database_url": SecretStr(self.dsn),
            "amqp_url": SecretStr(self.amqp_url),
            "namespace": self.topology.namespace,
            "partitions": self.topology.partitions,
            "call_timeout": 30.0,
        }
        return Settings.model_validate({**fleet, **overrides})

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        """A started client of the fleet's app, closed on exit."""
        app = load_app(self.app_spec)
        async with Client.connect(self.settings(), app, name="test-client") as client:
            yield client

    async def stop(self) -> None:
        for worker in self.live():
            worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()


@asynccontextmanager
async def process_fleet(
    folder: Path,
    namespace: str,
    dsn: str,
    amqp_url: str,
    *,
    app: str,
    partitions: int = 8,
    cwd: Path | None = None,
) -> AsyncIterator[ProcessFleet]:
    """A migrated namespace with its topology, for worker processes serving ``app``
    (``module:attribute``, importable from ``cwd``); everything removed afterwards."""
    store = await PostgresEventStore.connect(dsn, schema=namespace, max_size=2)
    transport = RabbitMQTransport(amqp_url, Topology(namespace, partitions))
    await store.migrate()
    await transport.start()
    running = ProcessFleet(
        folder, namespace, dsn, amqp_url, partitions=partitions, app_spec=app, cwd=cwd or Path.cwd()
    )
    try:
        yield running
    finally:
        await running.stop()
        await transport.delete_topology()
        await transport.close()
        await store.drop_namespace()
        await store.close()
