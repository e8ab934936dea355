"""The machine and the versions the numbers were measured with, and its disk's fsync rate.

The fsync rate bounds what any durable design can do one commit at a time:
it is PostgreSQL's own ``pg_test_fsync`` (first section: one 8 kB write and
a flush, per sync method) on the file system that holds the database, or a
plain write-and-fdatasync loop where that tool is missing.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

_PACKAGES = ("pachyderm-entities", "aio-pika", "aiormq", "pamqp", "asyncpg", "msgpack", "pydantic")
_SYNC_LINE = re.compile(r"^\s+(\S+)\s+([\d.]+) ops/sec")
_FSYNC_SECONDS = 1


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


async def _postgres(dsn: str) -> dict[str, str]:
    connection = await asyncpg.connect(dsn)
    try:
        settings = {
            name: await connection.fetchval(f"SHOW {name}")
            for name in (
                "server_version",
                "synchronous_commit",
                "fsync",
                "wal_sync_method",
                "shared_buffers",
                "data_directory",
            )
        }
    finally:
        await connection.close()
    return {str(key): str(value) for key, value in settings.items()}


async def _rabbitmq(url: str) -> str:
    connection = await aio_pika.connect(url)
    try:
        assert connection.transport is not None
        properties = connection.transport.connection.server_properties
        product, version, runtime = (
            _text(properties.get(key)) for key in ("product", "version", "platform")
        )
        return f"{product} {version} ({runtime})"
    finally:
        await connection.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _same_file_system_folder(data_directory: str) -> tuple[str, str]:
    """A folder we may write to on the database's file system, and how it was chosen."""
    temporary = tempfile.gettempdir()
    try:
        same = os.stat(data_directory).st_dev == os.stat(temporary).st_dev
    except OSError:
        return temporary, "the temporary folder (the data directory is not readable here)"
    if same:
        return temporary, "the temporary folder, on the data directory's file system"
    return temporary, "the temporary folder (NOT the data directory's file system)"


def _pg_test_fsync(folder: str, method: str) -> tuple[float, str] | None:
    tools = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_test_fsync"))
    if not tools:
        return None
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        process = subprocess.Popen(
            [tools[-1], "-s", str(_FSYNC_SECONDS), "-f", str(Path(scratch) / "fsync.test")],
            stdout=subprocess.PIPE,
            text=True,
        )
        rates: dict[str, float] = {}
        assert process.stdout is not None
        # Only the first section (one 8 kB write per sync) is wanted: stop after it.
        for line in process.stdout:
            if match := _SYNC_LINE.match(line):
                rates[match[1]] = float(match[2])
            elif rates and not line.strip():
                break
        process.terminate()
        process.wait()
    if method not in rates:
        return None
    return rates[method], f"pg_test_fsync, {method} after one 8 kB write"


def _fdatasync_loop(folder: str) -> tuple[float, str]:
    with tempfile.NamedTemporaryFile(dir=folder) as scratch:
        block = os.urandom(8192)
        count = 0
        deadline = time.perf_counter() + _FSYNC_SECONDS
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            os.pwrite(scratch.fileno(), block, 0)
            os.fdatasync(scratch.fileno())
            count += 1
        return count / (time.perf_counter() - started), "8 kB write + fdatasync loop in Python"


def fsync_rate(data_directory: str, method: str) -> dict[str, Any]:
    folder, where = _same_file_system_folder(data_directory)
    measured = _pg_test_fsync(folder, method) or _fdatasync_loop(folder)
    return {"ops_per_s": round(measured[0]), "how": measured[1], "where": where}


async def describe(dsn: str, amqp_url: str) -> dict[str, Any]:
    """Everything the results page says about the machine."""
    postgres = await _postgres(dsn)
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": f"{os.cpu_count()} cores, {_cpu_model()}",
        "memory_gib": round(_memory_gib(), 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "postgresql": (
            f"{postgres['server_version']} (synchronous_commit={postgres['synchronous_commit']},"
            f" fsync={postgres['fsync']}, wal_sync_method={postgres['wal_sync_method']},"
            f" shared_buffers={postgres['shared_buffers']})"
        ),
        "rabbitmq": await _rabbitmq(amqp_url),
        "packages": versions,
        "disk_fsync": fsync_rate(postgres["data_directory"], postgres["wal_sync_method"]),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }
