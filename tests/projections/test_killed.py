"""``pachyderm projections`` as a process: SIGKILLed mid-batch, it resumes (another process)
with nothing lost and nothing applied twice; a rebuild gives the same read model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest

from ..python_process import ROOT
from ..waiting import eventually
from . import tally
from .conftest import Backend
from .test_runners import PARTITIONS, create_read_model, fold_of_the_log, read_model, write_tallies

pytestmark = pytest.mark.postgres


@contextmanager
def projections(
    dsn: str, namespace: str, delay: float, port_file: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``pachyderm projections`` process of the tallies' exactly-once read model."""
    env = {
        **({"PACHYDERM_HEALTH_PORT_FILE": str(port_file)} if port_file else {}),
        **os.environ,
        "PACHYDERM_DATABASE_URL": dsn,
        "PACHYDERM_NAMESPACE": namespace,
        "PACHYDERM_PARTITIONS": str(PARTITIONS),
        "PACHYDERM_HEALTH_PORT": "0",
        "TALLY_APPLY_DELAY": str(delay),
    }
    command = [
        sys.executable,
        "-m",
        "pachyderm",
        "projections",
        "tests.projections.tally:TOTALS_APP",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def applied_up_to_the_cursors(backend: Backend, dsn: str, namespace: str) -> bool:
    """Whether the read model holds exactly the Added events at or before each cursor."""
    cursors = {c.partition: c.position for c in await backend.cursors.cursors("totals")}
    connection = await asyncpg.connect(dsn, server_settings={"search_path": namespace})
    try:
        applied = {
            r["event_id"] for r in await connection.fetch("SELECT event_id FROM tally_applied")
        }
    finally:
        await connection.close()
    expected = set()
    for partition, position in cursors.items():
        for logged in await backend.store.read_log(partition, 0, position):
            if logged.event.name == "Added":
                expected.add(logged.event_id)
    return applied == expected


async def health(port_file: Path, path: str) -> tuple[int, str]:
    """The status and body of the process's ``path`` now ((0, '') before it wrote its port)."""

    def get() -> tuple[int, str]:
        if not port_file.exists():
            return 0, ""
        url = f"http://127.0.0.1:{port_file.read_text().strip()}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    return await asyncio.to_thread(get)


async def lag_metrics(port_file: Path) -> list[str]:
    """The ``pachyderm_projection_lag`` lines of the process's ``/metrics`` now."""
    _, text = await health(port_file, "/metrics")
    return [line for line in text.splitlines() if line.startswith("pachyderm_projection_lag{")]


async def test_a_killed_process_loses_and_repeats_nothing_and_a_rebuild_agrees(
    postgres: Backend, postgres_dsn: str, namespace: str, tmp_path: Path
) -> None:
    await create_read_model(postgres_dsn, namespace)
    app = tally.TOTALS_APP
    await write_tallies(postgres, app, entities=40, each=60)  # 2,400 events, 1,600 Added
    expected = await fold_of_the_log(postgres, app)
    total = sum((await postgres.store.log_heads()).values())

    async def positions() -> int:
        return sum(c.position for c in await postgres.cursors.cursors("totals"))

    with projections(postgres_dsn, namespace, delay=0.002) as first:

        async def some_committed() -> bool:
            return await positions() > 0

        await eventually(some_committed, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    # Killed mid-way, with batches in flight: what they applied is gone with them.
    assert 0 < await positions() < total
    await asyncio.sleep(0.2)  # PostgreSQL notices the closed connections and rolls back
    assert await applied_up_to_the_cursors(postgres, postgres_dsn, namespace)

    port_file = tmp_path / "port"
    with projections(postgres_dsn, namespace, delay=0, port_file=port_file) as second:

        async def caught_up() -> bool:
            return await read_model(postgres_dsn, namespace) == expected

        await eventually(caught_up, timeout=30)
        assert await positions() == total

        assert await postgres.cursors.request_rebuild("totals") == PARTITIONS

        async def rebuilt() -> bool:
            cursors = await postgres.cursors.cursors("totals")
            return not any(c.rebuilding for c in cursors) and await caught_up()

        await eventually(rebuilt, timeout=30)
        assert await positions() == total

        async def no_lag_reported() -> bool:
            # Each partition this process runs (all of them, alone), caught up.
            lines = await lag_metrics(port_file)
            return len(lines) == PARTITIONS and all(
                'projection="totals"' in line and float(line.rsplit(" ", 1)[1]) == 0
                for line in lines
            )

        await eventually(no_lag_reported, timeout=10)
        status, body = await health(port_file, "/readyz")
        assert status == 200, body
        assert set(json.loads(body)["checks"]) == {"runners", "database"}
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
