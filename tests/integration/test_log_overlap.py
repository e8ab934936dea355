"""The event log under overlapping owners, on the real fleet: two worker processes that
both consume the same partitions at once (each believes it owns them all), many
concurrent commands to few entities so their commits race, and the log of each
partition still reads back gap-free, in commit order, every committed event once."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples import counter
from pachyderm import CallTimeoutError, Client, HandlerError
from pachyderm.store import LoggedEvent, PostgresEventStore

from ..waiting import eventually
from .harness import Fleet, counter_ref, fleet, histories

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

# Few entities, many commands each: the two workers keep deciding for the same entity
# at once, and one of the two commits is refused and decided again.
ENTITIES, COMMANDS = 24, 30


def workload(seed: int) -> list[tuple[int, int, str]]:
    """(entity, amount, command id) for ENTITIES x COMMANDS increments, shuffled."""
    rng = random.Random(seed)
    commands = [
        (entity, rng.randint(1, 9), str(uuid.uuid4()))
        for entity in range(ENTITIES)
        for _ in range(COMMANDS)
    ]
    rng.shuffle(commands)
    return commands


async def run_load(client: Client, commands: list[tuple[int, int, str]]) -> int:
    """Every command, 300 in flight at most, each until it applied; how many times a
    worker answered that the entity kept moving under it (both owners deciding for it
    at once, beyond the worker's retries), which the caller retries under the same
    command id: the command applies once whatever the retries."""
    gate = asyncio.Semaphore(300)
    refused = 0

    async def one(entity: int, amount: int, command_id: str) -> None:
        nonlocal refused
        async with gate:
            for _ in range(20):
                try:
                    await client.call(
                        counter_ref(entity),
                        counter.Increment(amount=amount),
                        command_id=command_id,
                        timeout=20,
                    )
                    return
                except CallTimeoutError:
                    continue
                except HandlerError as error:
                    if "still conflicting" not in str(error):
                        raise
                    refused += 1
            raise AssertionError(f"command {command_id} never applied")

    await asyncio.gather(*(one(*command) for command in commands))
    return refused


async def read_whole_log(running: Fleet) -> dict[int, list[LoggedEvent]]:
    """Every partition's log, read as a projection reads it (in pages after a position)."""
    store = await PostgresEventStore.connect(
        running.dsn, schema=running.topology.namespace, max_size=1
    )
    try:
        logs: dict[int, list[LoggedEvent]] = {}
        for partition in range(running.topology.partitions):
            found: list[LoggedEvent] = []
            while page := await store.read_log(partition, len(found), 97):
                found += page
            logs[partition] = found
        heads = await store.log_heads()
    finally:
        await store.close()
    for partition, logged in logs.items():
        assert heads.get(partition, 0) == len(logged), (partition, heads)
    return logs


async def metric(port_file: Path, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``, as a worker's
    /metrics reports them."""
    port = int(await asyncio.to_thread(port_file.read_text))
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.mark.parametrize("partitions", [1, 3])
async def test_positions_stay_gap_free_and_in_commit_order_under_overlapping_owners(
    tmp_path: Path, namespace: str, postgres_dsn: str, rabbitmq_url: str, partitions: int
) -> None:
    async with fleet(tmp_path, namespace, postgres_dsn, rabbitmq_url, partitions) as running:
        ports = {name: tmp_path / f"{name}.port" for name in ("owner-a", "owner-b")}
        for name, port_file in ports.items():
            # Small batches: many commits of each worker interleave in the log.
            running.start_worker(
                name, ownership="all", max_batch="8", health_port_file=str(port_file)
            )
        await running.serving_everything()
        commands = workload(seed=partitions)
        async with running.client() as client:
            refused = await run_load(client, commands)
        logs = await read_whole_log(running)
        stored = await histories(running.dsn, running.topology.namespace)

        async def both_reported() -> bool:
            return all(port_file.exists() for port_file in ports.values())

        await eventually(both_reported, timeout=10)
        handled = {
            name: await metric(port_file, "pachyderm_commands_total", outcome="ok")
            for name, port_file in ports.items()
        }
        conflicts = sum([await metric(p, "pachyderm_conflicts_total") for p in ports.values()])
    print(
        f"\ncommands handled {handled}, stale commits refused and decided again: {conflicts},"
        f" commands given up by a worker and sent again: {refused}"
    )
    # Both owners really committed to the same partitions at once.
    assert all(count > 0 for count in handled.values()), handled
    assert_the_log_holds_exactly(logs, stored, commands)


async def test_positions_stay_gap_free_across_a_hand_over_mid_load(
    tmp_path: Path, namespace: str, postgres_dsn: str, rabbitmq_url: str
) -> None:
    async with fleet(tmp_path, namespace, postgres_dsn, rabbitmq_url, 4) as running:
        running.start_worker("first", max_batch="8")
        await running.balanced()
        commands = workload(seed=7)
        async with running.client() as client:
            load = asyncio.create_task(run_load(client, commands))
            await asyncio.sleep(0.5)
            # The first owner hands partitions over while still committing its batches.
            running.start_worker("second", max_batch="8")
            await running.balanced()
            await load
        logs = await read_whole_log(running)
        stored = await histories(running.dsn, running.topology.namespace)
    assert_the_log_holds_exactly(logs, stored, commands)


def assert_the_log_holds_exactly(
    logs: dict[int, list[LoggedEvent]],
    stored: dict[Any, list[Any]],
    commands: list[tuple[int, int, str]],
) -> None:
    """Each partition's log gap-free from 1 and in commit order; every committed event in
    it exactly once; one event per command."""
    everything = [logged for log in logs.values() for logged in log]
    for partition, log in logs.items():
        # Gap-free from 1, in the order read_log pages through it.
        assert [logged.position for logged in log] == list(range(1, len(log) + 1)), partition
        assert all(logged.partition == partition for logged in log)
        # In commit order: an entity's versions come in increasing positions, from 1,
        # without a gap (so no later commit of it took an earlier position).
        versions: dict[uuid.UUID, list[int]] = defaultdict(list)
        for logged in log:
            versions[logged.event.entity_id].append(logged.event.version)
        for entity, seen in versions.items():
            assert seen == list(range(1, len(seen) + 1)), (partition, entity, seen)
    # Every committed event appears exactly once, in one partition only.
    in_log = Counter((e.event.entity_id, e.event.version) for e in everything)
    assert max(in_log.values()) == 1
    committed = {(row["entity_id"], row["version"]) for rows in stored.values() for row in rows}
    assert set(in_log) == committed
    assert len({logged.event_id for logged in everything}) == len(everything)
    # And each command applied once: one event per command, no other.
    assert sorted(e.event.command_id or "" for e in everything) == sorted(c for *_, c in commands)
    assert {e.event.entity_id for e in everything} == {
        counter_ref(entity).id for entity in range(ENTITIES)
    }
