"""Worker processes with fault points: a :class:`~pachyderm.testing.ProcessFleet` whose
workers run ``chaos.worker`` (``pachyderm worker`` with its ports wrapped), and the
process-level faults a run injects into them.

A worker's PostgreSQL sessions are found from the outside, by the local ports
of the process's own sockets to the server (``/proc/<pid>/fd`` and
``/proc/<pid>/net/tcp``), which PostgreSQL shows as ``client_port``: nothing
in the worker has to name them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from pachyderm.testing import ProcessFleet, WorkerProcess

from .worker import CONTROL_VARIABLE


def client_ports(pid: int, server_port: int) -> set[int]:
    """The local ports of process ``pid``'s TCP connections to ``server_port`` (none once
    it has ended: a poison may end the victim between its choice and this look)."""
    inodes = set()
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile
                target = os.readlink(f"/proc/{pid}/fd/{name}")
                if target.startswith("socket:["):
                    inodes.add(target.removeprefix("socket:[").removesuffix("]"))
        # Rows: sl local_address rem_address st ... inode, addresses as HEXIP:HEXPORT.
        tables = (Path(f"/proc/{pid}/net/{table}") for table in ("tcp", "tcp6"))
        rows = [row for table in tables for row in table.read_text().splitlines()[1:]]
    except FileNotFoundError:
        return set()
    ports = set()
    for row in rows:
        fields = row.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and int(remote.split(":")[1], 16) == server_port:
            ports.add(int(local.split(":")[1], 16))
    return ports


# Faster than the defaults, so that a CI-sized run settles in seconds: the
# sweep republishes what a crash left in the outbox after this long.
DEFAULT_SETTINGS = {"effects_grace": "1.0", "health_port": "0"}


class ChaosFleet:
    """Starts, orders and breaks the workers of ``fleet`` (which stops and removes them)."""

    def __init__(self, fleet: ProcessFleet, settings: dict[str, str] | None = None) -> None:
        self.fleet = fleet
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self._started = 0
        self.spares: set[str] = set()  # extra workers a fault brought in, not to be killed
        # `pachyderm projections` processes (p1, p2...): not workers, so not in the fleet's
        # list, whose balance counts the partitions its workers serve.
        self.projections: list[WorkerProcess] = []

    @property
    def namespace(self) -> str:
        return self.fleet.topology.namespace

    def _spawn(self, name: str, command: list[str], environment: dict[str, str]) -> WorkerProcess:
        """Start ``python -m <command> APP`` as ``name`` on the fleet's services, its
        output in ``<name>.log``; ``environment`` added to (and over) theirs."""
        log = self.fleet.folder / f"{name}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", *command, self.fleet.app_spec],
                cwd=self.fleet.cwd,
                env={
                    **os.environ,
                    "PACHYDERM_DATABASE_URL": self.fleet.dsn,
                    "PACHYDERM_AMQP_URL": self.fleet.amqp_url,
                    "PACHYDERM_NAMESPACE": self.namespace,
                    "PACHYDERM_PARTITIONS": str(self.fleet.topology.partitions),
                    "PACHYDERM_WORKER_ID": name,
                    **environment,
                },
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        return WorkerProcess(name, process, log)

    def start_worker(self, **settings: str) -> WorkerProcess:
        """Start the next worker (``w1``, ``w2``...) as ProcessFleet would, with the hooks."""
        self._started += 1
        name = f"w{self._started}"
        environment = {
            CONTROL_VARIABLE: str(self.fleet.folder / f"{name}.control"),
            **{
                f"PACHYDERM_{key.upper()}": value
                for key, value in {**self.settings, **settings}.items()
            },
        }
        worker = self._spawn(name, ["chaos.worker"], environment)
        self.fleet.workers.append(worker)
        return worker

    def start_projections(self) -> WorkerProcess:
        """Start the next projection process of the fleet's app (``p1``, ``p2``...)."""
        name = f"p{len(self.projections) + 1}"
        environment = {"PACHYDERM_HEALTH_PORT": "0"}
        projections = self._spawn(name, ["pachyderm", "projections"], environment)
        self.projections.append(projections)
        return projections

    def live_projections(self) -> list[WorkerProcess]:
        return [p for p in self.projections if p.process.poll() is None]

    async def stop_projections(self) -> None:
        """SIGTERM every live projection process; SIGKILL what has not exited in 15 s."""
        for projections in self.live_projections():
            projections.process.send_signal(signal.SIGTERM)
        for projections in self.projections:
            try:
                await asyncio.to_thread(projections.process.wait, 15)
            except subprocess.TimeoutExpired:
                projections.kill()

    def order(self, worker: WorkerProcess, order: str) -> None:
        """Hand ``order`` (see chaos.worker) to a running worker."""
        (self.fleet.folder / f"{worker.name}.control").write_text(order)
        worker.process.send_signal(signal.SIGUSR1)

    async def kill_at(self, worker: WorkerProcess, point: str, timeout: float) -> bool:
        """Make ``worker`` SIGKILL itself at ``point``; whether it did within ``timeout``."""
        self.order(worker, f"kill {point}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(worker.process.wait, timeout)
        return f"killed at {point}" in worker.log.read_text(errors="replace")

    async def terminate_backends(self, worker: WorkerProcess) -> int:
        """Terminate ``worker``'s PostgreSQL sessions (by their client ports); how many."""
        server_port = urlsplit(self.fleet.dsn).port or 5432
        ports = sorted(client_ports(worker.process.pid, server_port))
        connection = await asyncpg.connect(self.fleet.dsn)
        try:
            terminated = await connection.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE client_port = ANY($1::int[])",
                ports,
            )
        finally:
            await connection.close()
        return int(terminated)

    def stall(self, worker: WorkerProcess) -> None:
        worker.process.send_signal(signal.SIGSTOP)

    def resume(self, worker: WorkerProcess) -> None:
        worker.process.send_signal(signal.SIGCONT)

    def live(self) -> list[WorkerProcess]:
        return self.fleet.live()

    def start_spare(self, **settings: str) -> WorkerProcess:
        """A worker beside the fleet (e.g. one consuming every partition), for a while."""
        worker = self.start_worker(**settings)
        self.spares.add(worker.name)
        return worker

    async def serving(self, worker: WorkerProcess, timeout: float = 30) -> None:
        """Wait until ``worker`` says it consumes every partition."""
        everything = set(range(self.fleet.topology.partitions))
        deadline = time.monotonic() + timeout
        while worker.owned() != everything:
            if time.monotonic() > deadline or worker.process.poll() is not None:
                raise AssertionError(f"{worker.name} never served every partition")
            await asyncio.sleep(0.05)

    async def stop_spare(self, worker: WorkerProcess) -> None:
        """Stop a spare cleanly (SIGTERM: it finishes its batches and exits)."""
        worker.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(worker.process.wait, 30)
        except subprocess.TimeoutExpired:
            worker.kill()  # still a spare gone: the fleet's balance must not wait for it
        self.spares.discard(worker.name)

    def replace_dead(self, size: int) -> int:
        """Start workers until ``size`` of the fleet's own are live; how many started."""
        started = 0
        while len([w for w in self.live() if w.name not in self.spares]) < size:
            self.start_worker()
            started += 1
        return started

    async def restore(self, size: int) -> None:
        """Start workers until ``size`` of the fleet's own are live, then wait for balance
        (when it does not come, the failure shows where each worker's tasks wait)."""
        self.replace_dead(size)
        try:
            await self.fleet.balanced(timeout=60)
        except AssertionError as unbalanced:
            await self.log_stacks()
            await asyncio.sleep(2.0)  # each worker writes its stacks to its log
            stacks = {w.name: _last_stacks(w.log.read_text()) for w in self.live()}
            raise AssertionError(f"{unbalanced}\nwhere they wait: {stacks}") from None

    def exits(self) -> list[int]:
        """The exit statuses of the workers that ended, in start order."""
        return [code for w in self.fleet.workers if (code := w.process.poll()) is not None]

    async def log_stacks(self) -> None:
        """Have every live worker log its tasks' stacks (SIGUSR2, as an operator would),
        to see where a partition that stopped taking its deliveries waits."""
        for worker in self.live():
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGUSR2)
        await asyncio.sleep(1.0)

    def logs(self) -> str:
        """Each process's log: its lines on commands set aside (dead-lettered, fenced,
        whose settlement the broker refused or whose channel was lost), then its end."""
        shown = []
        for w in [*self.fleet.workers, *self.projections]:
            said = w.log.read_text(errors="replace")
            noted = [line for line in said.splitlines() if _NOTED.search(line)][-40:]
            shown.append(f"--- {w.name}\n" + "".join(f"{line}\n" for line in noted))
            shown.append(f"(the end)\n{said[-3000:]}")
        return "\n".join(shown)


_NOTED = re.compile(r"dead-lettering|fenced|refused \(|lost its channel|gave up|stacks of")


def _last_stacks(log: str) -> str:
    """The last task stacks a worker's log holds (SIGUSR2), the first 8,000 characters."""
    start = log.rfind("as asked (SIGUSR2)")
    return log[start : start + 8_000] if start >= 0 else "(none logged)"
