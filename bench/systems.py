"""The three systems under test, deployed alike.

Each deployment gets a namespace of its own (PostgreSQL schema, commands
exchange and 16 partition queues, through ``pachyderm.testing.process_fleet``)
and starts its worker processes with the same ``PACHYDERM_*`` variables and
the same fixed worker names, so the partitions split the same way. Only the
program differs: ``python -m pachyderm worker bench.app:APP`` or one of the
baselines in ``bench/baselines``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from pachyderm import Client
from pachyderm.testing import ProcessFleet, WorkerProcess

from .app import SPEC
from .baselines import naive_worker
from .config import ROOT, Services
from .slow_commits import slow_down_at

PACHYDERM, RAW_BROKER, NAIVE_WORKER = "pachyderm", "raw_broker", "naive_worker"
_HANDLED = re.compile(rb"handled (\d+)")


class System(Protocol):
    """How to run one design's workers and read how many commands they committed."""

    name: str

    def start_worker(self, fleet: ProcessFleet, name: str, names: Sequence[str]) -> WorkerProcess:
        """Start worker ``name`` of a fleet whose workers are ``names``."""
        ...

    async def committed(self, deployment: Deployment) -> int:
        """Commands committed (for the raw broker: handled) so far in the deployment."""
        ...

    def history_schema(self, namespace: str) -> str | None:
        """The schema whose ``events`` table holds the histories (None: none kept)."""
        ...

    async def prepare(self, services: Services, namespace: str) -> None:
        """Create what the workers need beyond the namespace (before they start)."""
        ...

    async def clean_up(self, services: Services, namespace: str) -> None:
        """Remove what :meth:`prepare` created (after the workers stopped)."""
        ...


class Pachyderm:
    name = PACHYDERM

    def start_worker(self, fleet: ProcessFleet, name: str, names: Sequence[str]) -> WorkerProcess:
        # Port 0: several workers (and other people's) share this host. Told their count,
        # as a deployment of a fixed count would tell them: they count once all joined.
        return fleet.start_worker(name, health_port="0", fleet_size=str(len(names)))

    async def committed(self, deployment: Deployment) -> int:
        return int(
            await deployment.fetchval(
                f'SELECT coalesce(sum(version), 0) FROM "{deployment.namespace}".entities'
            )
        )

    def history_schema(self, namespace: str) -> str | None:
        return namespace

    async def prepare(self, services: Services, namespace: str) -> None:
        # process_fleet migrated the namespace.
        await slow_down_at(services.dsn, namespace)

    async def clean_up(self, services: Services, namespace: str) -> None:
        return None


@dataclass
class Baseline:
    """A baseline program from ``bench/baselines``, started like a worker.

    ``in_postgres``: it keeps its counters and histories in the schema of
    ``naive_worker.schema_name`` (else in memory, nowhere to check).
    """

    name: str
    module: str
    in_postgres: bool = False

    def start_worker(self, fleet: ProcessFleet, name: str, names: Sequence[str]) -> WorkerProcess:
        log = fleet.folder / f"{name}.log"
        environment = {
            **os.environ,
            "PACHYDERM_DATABASE_URL": fleet.dsn,
            "PACHYDERM_AMQP_URL": fleet.amqp_url,
            "PACHYDERM_NAMESPACE": fleet.topology.namespace,
            "PACHYDERM_PARTITIONS": str(fleet.topology.partitions),
            "PACHYDERM_WORKER_ID": name,
            "BENCH_FLEET": ",".join(names),
        }
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=ROOT,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(name, process, log)
        # The fleet stops (SIGTERM) what it lists, as for its own workers.
        fleet.workers.append(worker)
        return worker

    async def committed(self, deployment: Deployment) -> int:
        return sum(_last_handled(worker.log) for worker in deployment.started)

    def history_schema(self, namespace: str) -> str | None:
        return naive_worker.schema_name(namespace) if self.in_postgres else None

    async def prepare(self, services: Services, namespace: str) -> None:
        if self.in_postgres:
            await naive_worker.create_schema(services.dsn, namespace)
            await slow_down_at(services.dsn, naive_worker.schema_name(namespace))

    async def clean_up(self, services: Services, namespace: str) -> None:
        if self.in_postgres:
            await naive_worker.drop_schema(services.dsn, namespace)


def _last_handled(log: Path) -> int:
    found = _HANDLED.findall(log.read_bytes())
    return int(found[-1]) if found else 0


SYSTEMS: dict[str, System] = {
    PACHYDERM: Pachyderm(),
    RAW_BROKER: Baseline(RAW_BROKER, "bench.baselines.raw_broker"),
    NAIVE_WORKER: Baseline(NAIVE_WORKER, "bench.baselines.naive_worker", in_postgres=True),
}


@dataclass
class Deployment:
    """One system in a namespace of its own, with the workers started so far."""

    system: System
    fleet: ProcessFleet
    services: Services
    started: list[WorkerProcess] = field(default_factory=list)
    _connection: asyncpg.Connection | None = None

    @property
    def namespace(self) -> str:
        return self.fleet.topology.namespace

    def start_workers(self, names: Sequence[str]) -> list[WorkerProcess]:
        workers = [self.system.start_worker(self.fleet, name, names) for name in names]
        self.started.extend(workers)
        return workers

    def restart_worker(self, name: str, names: Sequence[str]) -> WorkerProcess:
        worker = self.system.start_worker(self.fleet, name, names)
        self.started.append(worker)
        return worker

    def worker_pids(self) -> list[int]:
        return [worker.process.pid for worker in self.fleet.live()]

    async def fetchval(self, query: str, *arguments: object) -> Any:
        if self._connection is None:
            self._connection = await asyncpg.connect(self.services.dsn)
        return await self._connection.fetchval(query, *arguments)

    async def committed(self) -> int:
        return await self.system.committed(self)

    def client(self) -> AbstractAsyncContextManager[Client]:
        return self.fleet.client()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


@asynccontextmanager
async def deployed(system: System, services: Services, folder: Path) -> AsyncIterator[Deployment]:
    """``system`` in a fresh namespace; workers stopped and everything removed afterwards."""
    namespace = f"bench_{uuid.uuid4().hex[:10]}"
    async with services.fleet(folder, namespace, SPEC) as fleet:
        await system.prepare(services, namespace)
        deployment = Deployment(system, fleet, services)
        try:
            yield deployment
        finally:
            await fleet.stop()
            await deployment.close()
            await system.clean_up(services, namespace)
