"""Private PostgreSQL servers for the shard tests: their own data folders and ports.

Never the machine's own server: each is a :class:`chaos.services.PrivatePostgres`
(initdb'd into a temporary folder as the ``postgres`` user, listening on 127.0.0.1
only, trusting local connections) on a port of the shard tests' own range, with
fsync off (a test's data need not survive a crash of the machine). All start at
once, and are stopped and removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from chaos.services import PrivatePostgres

# Settings a test server may take without a restart (ALTER SYSTEM, then a reload).
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


async def _configure(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        for name, value in FAST.items():
            await connection.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        await connection.execute("SELECT pg_reload_conf()")
    finally:
        await connection.close()


@contextmanager
def private_servers(ports: Sequence[int]) -> Iterator[list[str]]:
    """PostgreSQL servers on ``ports``, started in parallel; their URLs."""
    root = Path(tempfile.mkdtemp(prefix="pachyderm-shards-"))
    root.chmod(0o755)  # the servers' user passes through to its own folder
    servers = []
    for port in ports:
        (root / str(port)).mkdir()
        servers.append(PrivatePostgres(root / str(port), port))
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(PrivatePostgres.start, servers))
        for server in servers:
            asyncio.run(_configure(server.dsn))
        yield [server.dsn for server in servers]
    finally:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(PrivatePostgres.stop, servers))
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def standby_of(primary_url: str, port: int) -> Iterator[str]:
    """A hot standby streaming from the server at ``primary_url`` (a base backup of it,
    recovery settings written by pg_basebackup -R) on ``port``; its URL."""
    root = Path(tempfile.mkdtemp(prefix="pachyderm-standby-"))
    root.chmod(0o755)
    server = PrivatePostgres(root, port)
    backup = [str(server.bin / "pg_basebackup"), "-D", str(server.data), "-R", "-X", "stream"]
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    try:
        subprocess.run([*as_user, *backup, "-d", primary_url], check=True, capture_output=True)
        server.start()
        yield server.dsn
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
