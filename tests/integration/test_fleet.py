"""The worker fleet end to end: worker processes on the machine's RabbitMQ and
PostgreSQL, called through the client, checked against the stored histories."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from examples import bank, counter
from pachyderm import CallTimeoutError, Client, RejectedError
from pachyderm import _codec as codec

from ..waiting import eventually
from .harness import (
    Fleet,
    assert_gapless,
    counter_ref,
    fleet,
    histories,
    outbox_command_ids,
)

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

ENTITIES, COMMANDS = 200, 20


@pytest.fixture
async def running(
    tmp_path: Path, namespace: str, postgres_dsn: str, rabbitmq_url: str
) -> AsyncIterator[Fleet]:
    async with fleet(tmp_path, namespace, postgres_dsn, rabbitmq_url) as started:
        yield started


def workload(seed: int) -> list[tuple[int, int, str]]:
    """(entity, amount, command id) for ENTITIES x COMMANDS increments, interleaved."""
    rng = random.Random(seed)
    commands = [
        (entity, rng.randint(1, 9), str(uuid.uuid4()))
        for entity in range(ENTITIES)
        for _ in range(COMMANDS)
    ]
    rng.shuffle(commands)
    return commands


async def call_until_answered(client: Client, entity: int, amount: int, command_id: str) -> Any:
    """Call; a timeout means "unknown", so retry with the same id (it applies once)."""
    for _ in range(4):
        try:
            return await client.call(
                counter_ref(entity),
                counter.Increment(amount=amount),
                command_id=command_id,
                timeout=20,
            )
        except CallTimeoutError:
            continue
    raise AssertionError(f"command {command_id} never answered")


async def run_load(
    client: Client, commands: list[tuple[int, int, str]], limit: int = 400
) -> dict[str, Any]:
    """Every command, at most ``limit`` in flight; the reply of each, by command id."""
    gate = asyncio.Semaphore(limit)
    replies: dict[str, Any] = {}

    async def one(entity: int, amount: int, command_id: str) -> None:
        async with gate:
            replies[command_id] = await call_until_answered(client, entity, amount, command_id)

    await asyncio.gather(*(one(*command) for command in commands))
    return replies


async def assert_outcome(
    running: Fleet, commands: list[tuple[int, int, str]], replies: dict[str, Any]
) -> None:
    """Exactly-once application, and every reply consistent with the stored history."""
    await assert_exact(running, commands)
    history = await histories(running.dsn, running.topology.namespace)
    assert_replies_match_history(replies, commands, history)


async def assert_exact(running: Fleet, commands: list[tuple[int, int, str]]) -> None:
    """Each command applied exactly once; histories gapless; states the exact sums."""
    history = await histories(running.dsn, running.topology.namespace)
    assert_gapless(history)
    applied = [event["command_id"] for events in history.values() for event in events]
    assert sorted(applied) == sorted(command_id for _, _, command_id in commands)
    amounts = {command_id: amount for _, amount, command_id in commands}
    for entity in range(ENTITIES):
        events = history[counter_ref(entity).id]
        assert [codec.decode(e["data"])["amount"] for e in events] == [
            amounts[e["command_id"]] for e in events
        ]


def assert_replies_match_history(
    replies: dict[str, Any], commands: list[tuple[int, int, str]], history: dict[Any, Any]
) -> None:
    """Every reply is the state right after its own event: never a guess, never stale."""
    totals: dict[str, int] = {}
    for entity in range(ENTITIES):
        running_total = 0
        for event in history[counter_ref(entity).id]:
            running_total += codec.decode(event["data"])["amount"]
            totals[event["command_id"]] = running_total
    for _, _, command_id in commands:
        assert replies[command_id] == {"count": totals[command_id]}, command_id


async def test_two_workers_apply_concurrent_commands_exactly(running: Fleet) -> None:
    running.start_worker("w1")
    running.start_worker("w2")
    await running.balanced()
    commands = workload(seed=1)
    async with running.client() as client:
        started = time.monotonic()
        replies = await run_load(client, commands)
        elapsed = time.monotonic() - started
    print(f"\n{len(commands)} commands in {elapsed:.2f}s: {len(commands) / elapsed:.0f}/s")
    await assert_outcome(running, commands, replies)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_a_worker_stopped_mid_run_loses_nothing_and_doubles_nothing(
    running: Fleet, how: str
) -> None:
    first = running.start_worker("w1")
    running.start_worker("w2")
    await running.balanced()
    commands = workload(seed=2)
    async with running.client() as client:
        load = asyncio.create_task(run_load(client, commands, limit=200))
        await asyncio.sleep(1.0)
        stopped_at = time.monotonic()
        if how == "SIGKILL":
            first.kill()
        else:
            first.process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(first.process.wait, 30) == 0
            print(f"\nSIGTERM to exit: {time.monotonic() - stopped_at:.2f}s")
            assert "stopped" in first.log.read_text()
        await running.balanced()
        print(f"\npartitions taken over {time.monotonic() - stopped_at:.2f}s after {how}")
        replies = await load
    await assert_outcome(running, commands, replies)


async def test_two_fleets_consuming_the_same_partitions_stay_exact(running: Fleet) -> None:
    # Each worker believes it alone owns every partition: the worst overlap.
    running.start_worker("fleet-a", ownership="all")
    running.start_worker("fleet-b", ownership="all")
    await running.serving_everything()
    commands = workload(seed=3)
    async with running.client() as client:
        replies = await run_load(client, commands)
    await assert_outcome(running, commands, replies)


async def test_concurrent_transfers_conserve_money(running: Fleet) -> None:
    running.start_worker("w1")
    running.start_worker("w2")
    await running.balanced()
    accounts = [bank.account(f"acct-{n}") for n in range(12)]
    rng = random.Random(4)
    rejected: list[str] = []
    async with running.client() as client:
        for number, ref in enumerate(accounts[:10]):  # the last two never open
            await client.call(ref, bank.Open(owner=str(number)))
            await client.call(ref, bank.Deposit(amount=1_000))

        async def transfer(source: Any, target: Any, amount: int) -> None:
            command_id = str(uuid.uuid4())
            try:
                await client.call(
                    source, bank.Transfer(to=target.id, amount=amount), command_id=command_id
                )
            except RejectedError:
                rejected.append(command_id)

        await asyncio.gather(
            *(
                transfer(accounts[rng.randrange(10)], rng.choice(accounts), rng.randint(1, 700))
                for _ in range(400)
            )
        )

        async def balances() -> list[int]:
            return [(await client.query(ref))["balance"] for ref in accounts]

        async def money_settled() -> bool:
            return sum(await balances()) == 10_000

        # Transfers in flight (debited, not yet credited) settle through the outbox.
        await eventually(money_settled, timeout=20, interval=0.1)
        assert all(balance >= 0 for balance in await balances())
    assert rejected, "no transfer was refused: the test did not exercise rejections"
    history = await histories(running.dsn, running.topology.namespace)
    assert_gapless(history)
    caused = {event["command_id"] for events in history.values() for event in events}
    assert not caused & set(rejected), "a rejected command left events behind"
    effects_caused_by = await outbox_command_ids(running.dsn, running.topology.namespace)
    assert not set(rejected) & effects_caused_by, "a rejected command published effects"
