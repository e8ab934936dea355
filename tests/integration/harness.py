"""Real worker processes on the machine's RabbitMQ and PostgreSQL, in a namespace of
their own, and the checks every run ends with."""

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
from typing import Any

import asyncpg

from examples.demo import APP
from pachyderm import Client, Ref
from pachyderm.store import PostgresEventStore
from pachyderm.transport import RabbitMQTransport, Topology

ROOT = Path(__file__).resolve().parents[2]
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


class Fleet:
    """Worker processes of one namespace, plus a client to call them."""

    def __init__(
        self, folder: Path, namespace: str, dsn: str, amqp_url: str, partitions: int
    ) -> None:
        self.folder = folder
        self.topology = Topology(namespace, partitions)
        self.dsn = dsn
        self.amqp_url = amqp_url
        self.workers: list[WorkerProcess] = []

    def start_worker(self, name: str, **settings: str) -> WorkerProcess:
        log = self.folder / f"{name}.log"
        environment = {
            **os.environ,
            "PACHYDERM_DATABASE_URL": self.dsn,
            "PACHYDERM_AMQP_URL": self.amqp_url,
            "PACHYDERM_NAMESPACE": self.topology.namespace,
            "PACHYDERM_PARTITIONS": str(self.topology.partitions),
            "PACHYDERM_WORKER_ID": name,
            **{f"PACHYDERM_{key.upper()}": value for key, value in settings.items()},
        }
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "pachyderm", "worker", "examples.demo:APP"],
                cwd=ROOT,
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

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        transport = RabbitMQTransport(self.amqp_url, self.topology, connection_name="test-client")
        await transport.start()
        client = Client(APP, transport, timeout=30)
        await client.start()
        try:
            yield client
        finally:
            await transport.close()

    async def stop(self) -> None:
        for worker in self.live():
            worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()


@asynccontextmanager
async def fleet(
    folder: Path, namespace: str, dsn: str, amqp_url: str, partitions: int = 8
) -> AsyncIterator[Fleet]:
    """A migrated namespace with its topology; everything removed afterwards."""
    store = await PostgresEventStore.connect(dsn, schema=namespace, max_size=2)
    transport = RabbitMQTransport(amqp_url, Topology(namespace, partitions))
    await store.migrate()
    await transport.start()
    running = Fleet(folder, namespace, dsn, amqp_url, partitions)
    try:
        yield running
    finally:
        await running.stop()
        await transport.delete_topology()
        await transport.close()
        await store.drop_namespace()
        await store.close()


# -- checks ------------------------------------------------------------------------


async def _fetch(dsn: str, namespace: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn, server_settings={"search_path": namespace})
    try:
        return list(await connection.fetch(query))
    finally:
        await connection.close()


async def outbox_command_ids(dsn: str, namespace: str) -> set[str]:
    """The commands that wrote effects to the outbox."""
    rows = await _fetch(dsn, namespace, "SELECT command_id FROM outbox")
    return {row["command_id"] for row in rows}


async def histories(dsn: str, namespace: str) -> dict[Any, list[asyncpg.Record]]:
    """Every event of the namespace, by entity, in version order."""
    rows = await _fetch(
        dsn,
        namespace,
        "SELECT entity_id, version, name, data, command_id FROM events ORDER BY entity_id, version",
    )
    found: dict[Any, list[asyncpg.Record]] = {}
    for row in rows:
        found.setdefault(row["entity_id"], []).append(row)
    return found


def assert_gapless(history: dict[Any, list[asyncpg.Record]]) -> None:
    for entity_id, events in history.items():
        versions = [event["version"] for event in events]
        assert versions == list(range(1, len(events) + 1)), f"gap in {entity_id}: {versions}"


def counter_ref(number: int) -> Ref:
    return Ref.from_key("counter", f"load-{number}")
