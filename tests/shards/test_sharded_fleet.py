"""A fleet of two worker processes on a store over three private PostgreSQL servers:
a worker killed mid-run, the other takes its partitions over, and nothing is lost or
applied twice; the log of every partition, read across the servers, holds each event
once, and a projection fed from it counts every command."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from examples import counter
from pachyderm import App, CallTimeoutError, Client, Projection, Ref
from pachyderm.fleet import SoloMembership
from pachyderm.projections import ProjectionProcess, RunnerOptions, open_cursors
from pachyderm.store import ShardedEventStore, ShardMap
from pachyderm.testing import ProcessFleet

from ..integration import harness
from ..waiting import eventually
from .conftest import PARTITIONS, spread

pytestmark = [pytest.mark.shards, pytest.mark.rabbitmq]

ENTITIES, EACH = 60, 30


@pytest.fixture
async def running(
    tmp_path: Path, namespace: str, shard_urls: list[str], rabbitmq_url: str, sharded: Any
) -> AsyncIterator[ProcessFleet]:
    """Worker processes whose database URL, for the fleet's own tables (membership), is
    the first server; each is given the shard map (``sharded`` migrated every server)."""
    async with harness.fleet(
        tmp_path, namespace, shard_urls[0], rabbitmq_url, partitions=PARTITIONS
    ) as started:
        yield started


def _ref(entity: int) -> Ref:
    return counter.Counter.ref(f"sharded-{entity}")


async def _call(client: Client, entity: int, amount: int, command_id: str) -> Any:
    """A timeout is "unknown": the same command id again applies it once."""
    for _ in range(4):
        try:
            return await client.call(
                _ref(entity), counter.Increment(amount=amount), command_id=command_id, timeout=20
            )
        except CallTimeoutError:
            continue
    raise AssertionError(f"command {command_id} never answered")


async def _events_by_server(urls: list[str], namespace: str) -> list[list[asyncpg.Record]]:
    found = []
    for url in urls:
        connection = await asyncpg.connect(url, server_settings={"search_path": namespace})
        try:
            found.append(
                list(
                    await connection.fetch(
                        "SELECT e.entity_id, e.version, e.command_id, l.partition"
                        "  FROM events e JOIN event_log l USING (entity_id, version)"
                        " ORDER BY e.entity_id, e.version"
                    )
                )
            )
        finally:
            await connection.close()
    return found


class Counted(Projection):
    """Every Increased, by entity (at least once: a repeat would show as a double)."""

    name = "counted"
    events = (counter.Increased,)

    def __init__(self) -> None:
        self.seen: dict[tuple[uuid.UUID, int], int] = {}
        self.repeated = 0

    async def apply(self, event: Any, context: Any) -> None:
        key = (context.entity_id, context.version)
        self.repeated += key in self.seen
        self.seen[key] = event.amount


async def test_a_worker_killed_mid_run_on_a_sharded_store_loses_nothing_and_doubles_nothing(
    running: ProcessFleet,
    sharded: ShardedEventStore,
    shard_urls: list[str],
    shard_map: ShardMap,
    namespace: str,
) -> None:
    shards = spread(shard_urls)
    first = running.start_worker("w1", database_shards=shards)
    running.start_worker("w2", database_shards=shards)
    await running.balanced(timeout=60)
    rng = random.Random(7)
    commands = [(n, rng.randint(1, 9), str(uuid.uuid4())) for n in range(ENTITIES)] * EACH
    commands = [(n, amount, str(uuid.uuid4())) for n, amount, _ in commands]
    rng.shuffle(commands)
    gate = asyncio.Semaphore(100)
    replies: dict[str, Any] = {}

    async def one(entity: int, amount: int, command_id: str) -> None:
        async with gate:
            replies[command_id] = await _call(client, entity, amount, command_id)

    async with running.client() as client:
        load = asyncio.gather(*(one(*command) for command in commands))
        # The kill lands once a tenth has answered (a fixed sleep raced a fast machine).
        await eventually(lambda: _answered(replies, len(commands) // 10), timeout=60)
        assert not load.done(), "the load ended before the kill: make it longer"
        first.kill()
        await running.balanced(timeout=60)
        await load

    applied = await _assert_exact(shard_urls, shard_map, namespace, commands, replies)

    # The log across the servers: gap-free positions, every event once; a projection
    # fed from it (cursors on the coordination server) counts every command.
    heads = await sharded.log_heads()
    logged = [e for p, head in heads.items() for e in await sharded.read_log(p, 0, head + 1)]
    assert sorted(e.event.command_id or "" for e in logged) == applied
    for partition, head in heads.items():
        positions = [e.position for e in logged if e.partition == partition]
        assert positions == list(range(1, head + 1))
    counted = await _projected(sharded, shard_urls[0], namespace, len(commands))
    assert counted.repeated == 0
    assert sum(counted.seen.values()) == sum(amount for _, amount, _ in commands)


async def _answered(replies: dict[str, Any], enough: int) -> bool:
    return len(replies) >= enough


async def _assert_exact(
    urls: list[str],
    shard_map: ShardMap,
    namespace: str,
    commands: list[tuple[int, int, str]],
    replies: dict[str, Any],
) -> list[str]:
    """Each command applied once, on its partition's server, its reply the state right
    after its own event; the command ids applied, sorted."""
    by_server = await _events_by_server(urls, namespace)
    # Each server holds only its partitions' events, and every event is on one server.
    for url, rows in zip(urls, by_server, strict=True):
        assert {shard_map.url_of(row["partition"]) for row in rows} <= {url}
    history: dict[uuid.UUID, list[asyncpg.Record]] = defaultdict(list)
    for rows in by_server:
        for row in rows:
            history[row["entity_id"]].append(row)
    applied = sorted(row["command_id"] for rows in history.values() for row in rows)
    assert applied == sorted(command_id for _, _, command_id in commands)
    amounts = {command_id: amount for _, amount, command_id in commands}
    for entity in range(ENTITIES):
        rows = history[_ref(entity).id]
        assert [row["version"] for row in rows] == list(range(1, EACH + 1))
        total = 0
        for row in rows:
            total += amounts[row["command_id"]]
            assert replies[row["command_id"]] == {"count": total}
    return applied


async def _projected(
    sharded: ShardedEventStore, coordination: str, namespace: str, expected: int
) -> Counted:
    """A projection of the sharded log, run until it has counted ``expected`` events."""
    counted = Counted()
    cursors = await open_cursors(coordination, namespace=namespace)
    process = ProjectionProcess(
        App([counter.Counter], projections=[counted]),
        sharded,
        cursors,
        SoloMembership(),
        partitions=PARTITIONS,
        options=RunnerOptions(min_interval=0.01, max_interval=0.1),
    )

    async def all_counted() -> bool:
        return len(counted.seen) == expected

    stop = asyncio.Event()
    task = asyncio.create_task(process.run(stop))
    try:
        await eventually(all_counted, timeout=60, interval=0.05)
    finally:
        stop.set()
        await task
        await cursors.close()
    return counted
