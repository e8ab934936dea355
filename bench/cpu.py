"""CPU time per component, from /proc: client, workers, broker and database.

``utime + stime`` of each process (all its threads) before and after a
workload. The PostgreSQL sessions counted are only the ones serving the
workers under test, found by matching TCP ports, because this machine's
database also serves other people's tests; its shared background processes
(WAL writer, checkpointer, background writer) are counted apart. The broker
(``beam.smp``) is one process for every user of the machine, so its figure
includes whatever else used RabbitMQ meanwhile; ``machine`` is every CPU
second spent on the host, so ``machine`` minus the rest is the noise. Beside
them: the workers' system (kernel) share, and how long the client and the
workers were ready to run but waited for a CPU (``/proc/<pid>/schedstat``):
on a saturated machine that, not CPU, is where their time goes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

_TICK = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")
_POSTGRES_BACKGROUND = ("walwriter", "checkpointer", "background writer", "autovacuum")

CLIENT, WORKERS, BROKER, POSTGRES, POSTGRES_BACKGROUND, MACHINE = (
    "client",
    "workers",
    "broker",
    "postgres (sessions of the workers)",
    "postgres (WAL writer, checkpointer, ...)",
    "machine (everything)",
)
# Not components but parts of one, or time spent not running.
WORKERS_KERNEL = "workers: of which in the kernel"
WORKERS_WAITING = "workers: waited for a CPU"
CLIENT_WAITING = "client: waited for a CPU"


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far (0 if it is gone)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0.0, 0.0
    # The command name in parentheses may hold spaces: split after it.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process so far (0 if it is gone)."""
    return sum(cpu_times(pid))


def waited_seconds(pid: int) -> float:
    """Seconds a process was ready to run but waited for a CPU (schedstat)."""
    try:
        return int((_PROC / str(pid) / "schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds the whole host spent not idle, over all cores."""
    values = [int(v) for v in (_PROC / "stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


def _command(pid: int) -> tuple[str, str]:
    try:
        comm = (_PROC / str(pid) / "comm").read_text().strip()
        line = (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "", ""
    return comm, line


def processes(name: str) -> list[int]:
    """Pids of the processes whose command name is ``name``."""
    return [
        int(entry.name)
        for entry in _PROC.iterdir()
        if entry.name.isdigit() and _command(int(entry.name))[0] == name
    ]


def _sockets(pid: int) -> set[int]:
    """Inodes of a process's sockets (empty where /proc does not let us look)."""
    found = set()
    try:
        for fd in (_PROC / str(pid) / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    except OSError:
        pass
    return found


def _tcp_ports() -> dict[int, tuple[int, int]]:
    """socket inode -> (local port, remote port), for every TCP socket of the host."""
    ports: dict[int, tuple[int, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            columns = line.split()
            local, remote, inode = columns[1], columns[2], int(columns[9])
            ports[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
    return ports


def postgres_sessions(client_pids: Iterable[int], port: int) -> list[int]:
    """The PostgreSQL backends serving connections that ``client_pids`` opened."""
    tcp = _tcp_ports()
    theirs = {
        (port, tcp[inode][0])
        for pid in client_pids
        for inode in _sockets(pid)
        if inode in tcp and tcp[inode][1] == port
    }
    return [
        pid
        for pid in processes("postgres")
        if any(tcp.get(inode) in theirs for inode in _sockets(pid))
    ]


def postgres_port(dsn: str) -> int:
    return urlsplit(dsn).port or 5432


@dataclass
class CpuMeter:
    """CPU seconds per component over a stretch of work (:meth:`start`, :meth:`stop`)."""

    client_pid: int
    worker_pids: list[int]
    database_port: int
    _before: dict[int, float] = field(default_factory=dict)
    _extras_before: dict[str, float] = field(default_factory=dict)

    def _tracked(self) -> list[int]:
        return [
            self.client_pid,
            *self.worker_pids,
            *processes("beam.smp"),
            *processes("postgres"),
        ]

    def _extras(self) -> dict[str, float]:
        return {
            WORKERS_KERNEL: sum(cpu_times(pid)[1] for pid in self.worker_pids),
            WORKERS_WAITING: sum(map(waited_seconds, self.worker_pids)),
            CLIENT_WAITING: waited_seconds(self.client_pid),
            MACHINE: machine_busy_seconds(),
        }

    def start(self) -> None:
        self._before = {pid: cpu_seconds(pid) for pid in self._tracked()}
        self._extras_before = self._extras()

    def _spent(self, pids: Iterable[int]) -> float:
        # A process started meanwhile (a new database session) spent it all in here.
        return sum(max(0.0, cpu_seconds(pid) - self._before.get(pid, 0.0)) for pid in pids)

    def stop(self) -> dict[str, float]:
        """CPU seconds each component spent since :meth:`start`."""
        sessions = postgres_sessions(self.worker_pids, self.database_port)
        background = [
            pid
            for pid in processes("postgres")
            if any(name in _command(pid)[1] for name in _POSTGRES_BACKGROUND)
        ]
        extras = {name: value - self._extras_before[name] for name, value in self._extras().items()}
        return {
            CLIENT: self._spent([self.client_pid]),
            WORKERS: self._spent(self.worker_pids),
            BROKER: self._spent(processes("beam.smp")),
            POSTGRES: self._spent(sessions),
            POSTGRES_BACKGROUND: self._spent(background),
            **extras,
        }


def per_thousand(spent: dict[str, float], commands: int) -> dict[str, float]:
    """CPU seconds per 1,000 commands, per component."""
    return {name: seconds * 1000 / commands for name, seconds in spent.items()}
