"""One process per worker id, end to end: `pachyderm worker` processes on the machine's
RabbitMQ and PostgreSQL, two of them given the same PACHYDERM_WORKER_ID."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from examples import counter
from pachyderm import Ref
from pachyderm.testing import ProcessFleet, WorkerProcess

from ..integration.harness import ROOT, fleet_fixture

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

APP = "examples.demo:APP"
PARTITIONS = 4
HOST = socket.gethostname()  # in every worker's info, with its pid
# Faster than the defaults (the timing the same for every worker of the namespace);
# any free health port, as both twins run on this host.
SETTINGS = {"heartbeat_interval": "0.2", "dead_after": "0.6", "health_port": "0"}


running = fleet_fixture(APP, PARTITIONS, name="running")


@pytest.fixture
async def beside(running: ProcessFleet, tmp_path: Path) -> AsyncIterator[ProcessFleet]:
    """More workers of the same namespace, with logs of their own (a worker's log is
    named after its id, which the twins share)."""
    folder = tmp_path / "beside"
    folder.mkdir()
    other = ProcessFleet(
        folder,
        running.topology.namespace,
        running.dsn,
        running.amqp_url,
        partitions=PARTITIONS,
        app_spec=APP,
        cwd=ROOT,
    )
    try:
        yield other
    finally:
        await other.stop()


async def exit_status(worker: WorkerProcess, within: float = 30.0) -> int:
    return await asyncio.to_thread(worker.process.wait, within)


async def holder_pid(fleet: ProcessFleet, worker_id: str) -> str:
    connection = await asyncpg.connect(
        fleet.dsn, server_settings={"search_path": fleet.topology.namespace}
    )
    try:
        info = await connection.fetchval("SELECT info FROM workers WHERE worker_id = $1", worker_id)
    finally:
        await connection.close()
    assert isinstance(info, str)
    return info.rsplit("pid=", 1)[-1]


async def still_serving(fleet: ProcessFleet, worker: WorkerProcess) -> None:
    """``worker`` lives, consumes every partition, and answers a call."""
    assert worker.process.poll() is None
    assert worker.owned() == set(range(PARTITIONS))
    async with fleet.client() as client:
        reply = await client.call(Ref.from_key("counter", "twins"), counter.Increment(amount=1))
    assert reply == {"count": 1}


def last_line(worker: WorkerProcess) -> str:
    log = worker.log.read_text(errors="replace")
    assert "Traceback" not in log
    return log.strip().splitlines()[-1]


async def test_a_second_worker_under_a_live_workers_id_exits_and_the_first_serves_on(
    running: ProcessFleet, beside: ProcessFleet
) -> None:
    first = running.start_worker("twin", **SETTINGS)
    await running.balanced()

    second = beside.start_worker("twin", **SETTINGS)
    assert await exit_status(second) == 1
    reported = last_line(second)
    assert reported.startswith(
        "pachyderm: worker id 'twin' is taken: another live process"
        f" (host={HOST} pid={first.process.pid}) runs under it"
    )
    assert reported.endswith("give each worker an id of its own (PACHYDERM_WORKER_ID)")

    assert await holder_pid(running, "twin") == str(first.process.pid)
    await still_serving(running, first)


async def test_a_worker_whose_id_was_taken_while_it_stalled_exits_and_the_other_serves_on(
    running: ProcessFleet, beside: ProcessFleet
) -> None:
    first = running.start_worker("twin", **SETTINGS)
    await running.balanced()
    first.process.send_signal(signal.SIGSTOP)  # silent past dead_after: its lease lapses
    try:
        second = beside.start_worker("twin", **SETTINGS)
        await beside.balanced()
    finally:
        first.process.send_signal(signal.SIGCONT)

    # Its next heartbeat finds the id taken: it stops as on SIGTERM (releasing its
    # partitions), then exits with the reason.
    assert await exit_status(first) == 1
    assert first.owned() == set()
    assert last_line(first).startswith(
        f"pachyderm: worker id 'twin' was taken over by another process (host={HOST}"
        f" pid={second.process.pid}) while this one could not renew its lease; this one stops"
    )
    assert await holder_pid(running, "twin") == str(second.process.pid)
    await still_serving(beside, second)
