"""Cuts between components: worker ``a`` reaches PostgreSQL and RabbitMQ through proxies
the test cuts (:mod:`.proxy`), worker ``b`` reaches them directly, while a client sends
increments to entities of every partition.

- Cut from PostgreSQL, ``a`` still consumes from RabbitMQ: its heartbeats fail, its
  lease lapses, ``b`` takes its partitions and ``a`` hands back what it holds.
- Cut from RabbitMQ, ``a`` still reaches PostgreSQL: it leaves the fleet, ``b`` takes
  its partitions, and the broker takes back ``a``'s deliveries (at once when the cut
  resets the connection, once the AMQP heartbeat gives it up when it is silent).

Either way no acknowledged command is lost, none applies twice, every history is
single (the version check), and once healed ``a`` takes its share back. The figures
(how long ``a`` kept its partitions' deliveries, how long until ``b`` served them) are
printed and written to ``$PACHYDERM_CUTS_RESULTS`` when set.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from chaos.services import PrivatePostgres
from pachyderm import Client
from pachyderm.testing import WorkerProcess
from pachyderm.transport import RabbitMQTransport

from ..integration.harness import Fleet, fleet
from ..integration.test_fleet import ENTITIES, assert_outcome, run_load, workload
from .proxy import Cut, Proxy

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.cuts]

PARTITIONS = 8
EVERYTHING = set(range(PARTITIONS))
# Short leases; a's AMQP heartbeat short enough that a silent broker cut is noticed
# (by both ends) within seconds rather than minutes.
TIMING = {"heartbeat_interval": "0.4", "dead_after": "1.2", "statement_timeout": "2"}
AMQP_HEARTBEAT = 2
RESULTS_VARIABLE = "PACHYDERM_CUTS_RESULTS"
# Increments to every entity of test_fleet's workload, spread over LOAD_SECONDS.
COMMANDS, LOAD_SECONDS = 1200, 10


@dataclass
class Figures:
    """Seconds from the cut, as this test saw them (polling every 50 ms)."""

    component: str
    cut: str
    b_serves_all: float  # b says it serves every partition
    a_gave_up: float  # a says it serves none (closed its inboxes), or left the fleet
    a_consumers_gone: float  # the broker counts no consumer but b's: a holds no delivery
    a_back: float  # from the heal until both serve their shares again


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[str]:
    """A PostgreSQL server of these tests' own (a shared server that other tests fill
    up to its connection limit would fail them for nothing); its URL."""
    # Not under pytest's folder, which only its owner may enter: the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="pachyderm-cuts-"))
    folder.chmod(0o755)
    server = PrivatePostgres(folder)
    try:
        server.start()
        yield server.dsn
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def proxied(
    tmp_path: Path, namespace: str, private_postgres: str, rabbitmq_url: str
) -> AsyncIterator[tuple[Fleet, dict[str, Proxy]]]:
    postgres_dsn = private_postgres
    async with AsyncExitStack() as stack:
        running = await stack.enter_async_context(
            fleet(tmp_path, namespace, postgres_dsn, rabbitmq_url, partitions=PARTITIONS)
        )
        # Closed before the fleet stops: the fleet waits for its workers blocking the
        # event loop, in which the proxies run; a's way out must not depend on them.
        proxies = {
            "postgres": await stack.enter_async_context(Proxy.to(postgres_dsn)),
            "rabbitmq": await stack.enter_async_context(Proxy.to(rabbitmq_url)),
        }
        yield running, proxies


async def paced_load(client: Client, commands: list[tuple[int, int, str]]) -> dict[str, Any]:
    """The commands in equal chunks, one started every second for LOAD_SECONDS: the load
    spans the cut and the takeover however fast the machine is; the replies by command id."""
    chunks = [commands[start::LOAD_SECONDS] for start in range(LOAD_SECONDS)]

    async def after(delay: int, chunk: list[tuple[int, int, str]]) -> dict[str, Any]:
        await asyncio.sleep(delay)
        return await run_load(client, chunk, limit=50)

    replies: dict[str, Any] = {}
    for chunk_replies in await asyncio.gather(*map(after, range(LOAD_SECONDS), chunks)):
        replies |= chunk_replies
    return replies


async def until(
    condition: Callable[[], bool | Awaitable[bool]], started: float, timeout: float = 30.0
) -> float:
    """Wait until ``condition()`` holds; seconds since ``started``."""
    while True:
        holds = condition()
        if holds if isinstance(holds, bool) else await holds:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, "not so within the time allowed"
        await asyncio.sleep(0.05)


async def only_consumers_of(transport: RabbitMQTransport, worker: WorkerProcess) -> bool:
    """Whether the broker counts no partition consumer but ``worker``'s: no other worker
    holds deliveries. (A worker says it serves a partition once its consumer is up, so
    one opening meanwhile makes the count larger, never equal.)"""
    return sum(await transport.partition_consumers()) == len(worker.owned() or ())


def gave_up(worker: WorkerProcess) -> bool:
    """Whether ``worker`` says it serves nothing, or left the fleet for want of a broker
    (its inboxes then close once the broker is back: the broker took its deliveries back
    with the connection)."""
    return worker.owned() == set() or "leaving the fleet" in worker.log.read_text()


async def takeover_state(monitor: RabbitMQTransport, a: WorkerProcess, b: WorkerProcess) -> str:
    """What a takeover that did not end in time had reached, and the workers' logs."""
    consumers = await monitor.partition_consumers()
    logs = "\n".join(
        f"--- {w.name}.log:\n{w.log.read_text(errors='replace')[-6000:]}" for w in (a, b)
    )
    return (
        f"takeover not done: b serves {b.owned()}, a serves {a.owned()}"
        f" (gave up: {gave_up(a)}), partition consumers {consumers}\n{logs}"
    )


def record(figures: Figures) -> None:
    print(f"\n{json.dumps(asdict(figures))}")
    if path := os.environ.get(RESULTS_VARIABLE):
        with Path(path).open("a") as results:
            results.write(json.dumps(asdict(figures)) + "\n")


@pytest.mark.parametrize("how", ["reset", "blackhole"])
@pytest.mark.parametrize("component", ["postgres", "rabbitmq"])
async def test_a_worker_cut_from_a_component_hands_over_and_loses_nothing(
    proxied: tuple[Fleet, dict[str, Proxy]], component: str, how: Cut
) -> None:
    running, proxies = proxied
    amqp_url = proxies["rabbitmq"].url(running.amqp_url) + f"?heartbeat={AMQP_HEARTBEAT}"
    a = running.start_worker(
        "a", database_url=proxies["postgres"].url(running.dsn), amqp_url=amqp_url, **TIMING
    )
    b = running.start_worker("b", **TIMING)
    await running.balanced()
    a_share = a.owned()
    assert a_share, "a serves nothing: the cut would show nothing"
    assert b.owned(), "b serves nothing: it is not running, or not counted"
    monitor = RabbitMQTransport(running.amqp_url, running.topology)
    await monitor.start()
    commands = workload(seed=17)[:COMMANDS]
    assert len({entity for entity, _, _ in commands}) == ENTITIES  # as assert_outcome expects
    try:
        async with running.client() as client:
            load = asyncio.create_task(paced_load(client, commands))
            await asyncio.sleep(1.0)
            proxies[component].cut(how)
            cut = time.monotonic()
            try:
                b_serves_all, a_gave_up, a_consumers_gone = await asyncio.gather(
                    until(lambda: b.owned() == EVERYTHING, cut),
                    until(lambda: gave_up(a), cut),
                    until(lambda: only_consumers_of(monitor, b), cut),
                )
            except AssertionError as error:
                raise AssertionError(await takeover_state(monitor, a, b)) from error
            replies = await load
            proxies[component].heal()
            healed = time.monotonic()
            a_back = await until(lambda: a.owned() == a_share and len(b.owned() or ()) < 8, healed)
    finally:
        await monitor.close()
    record(Figures(component, how, b_serves_all, a_gave_up, a_consumers_gone, a_back))
    await running.balanced()
    assert a.process.poll() is None, "a died of the cut"
    await assert_outcome(running, commands, replies)
