"""Retention on a real fleet: a worker process on the machine's RabbitMQ and PostgreSQL
prunes back-dated command ids and published effects while commands flow, and refuses a
command sent longer ago than the window, through the client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples import counter
from pachyderm import CommandExpiredError, InvalidSentTimeError
from pachyderm import _expiry as expiry

from ..integration.harness import Fleet, fleet
from ..waiting import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

# A short window: an hour, less a minute's margin; rows back-dated by two hours.
WINDOW = {"command_retention": "3600", "command_expiry_margin": "60", "outbox_retention": "600"}
PRUNING = {"prune_interval": "0.2", "prune_batch": "500", "prune_pause": "0.01"}
OLD_COMMANDS, OLD_EFFECTS, CHUNKS = 20_000, 5_000, 4
LANES = 8


@pytest.fixture
async def running(
    tmp_path: Path, namespace: str, postgres_dsn: str, rabbitmq_url: str
) -> AsyncIterator[Fleet]:
    async with fleet(tmp_path, namespace, postgres_dsn, rabbitmq_url, partitions=4) as started:
        yield started


async def _sql(running: Fleet, query: str, *arguments: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(
        running.dsn, server_settings={"search_path": running.topology.namespace}
    )
    try:
        return list(await connection.fetch(query, *arguments))
    finally:
        await connection.close()


async def _backdate(running: Fleet, chunk: int) -> None:
    """Command ids recorded two hours ago, and effects published an hour ago."""
    await _sql(
        running,
        "INSERT INTO commands (entity_id, command_id, version, reply, recorded_at)"
        " SELECT gen_random_uuid(), $1 || n, 1, '\\x00'::bytea, now() - interval '2 hours'"
        " FROM generate_series(1, $2) n",
        f"old-{chunk}-",
        OLD_COMMANDS // CHUNKS,
    )
    await _sql(
        running,
        "INSERT INTO outbox (effect_id, entity_id, command_id, destination, payload,"
        " created_at, published_at)"
        " SELECT gen_random_uuid(), gen_random_uuid(), 'old', 'effect.gone', '\\x00'::bytea,"
        " now() - interval '2 hours', now() - interval '1 hour' FROM generate_series(1, $1)",
        OLD_EFFECTS // CHUNKS,
    )


async def _metric(port_file: Path, name: str, **labels: str) -> float:
    port = int(await asyncio.to_thread(port_file.read_text))
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def test_pruning_under_load_fails_no_command_and_keeps_every_recent_id(
    running: Fleet, tmp_path: Path
) -> None:
    port_file = tmp_path / "w1.port"
    running.start_worker("w1", health_port_file=str(port_file), **WINDOW, **PRUNING)
    await running.balanced()
    refs = [counter.Counter.ref(f"pruned-{n}") for n in range(LANES)]
    sent = [0] * LANES
    pruned = asyncio.Event()

    async def lane(number: int) -> None:
        """Commands to one counter, one after another, until pruning is over."""
        while not pruned.is_set():
            answer = await client.call(refs[number], counter.Increment(amount=1))
            sent[number] += 1
            assert answer == {"count": sent[number]}

    async def old_rows_gone() -> bool:
        rows = await _sql(
            running,
            "SELECT (SELECT count(*) FROM commands WHERE command_id LIKE 'old-%') AS c,"
            " (SELECT count(*) FROM outbox WHERE command_id = 'old') AS e",
        )
        return (rows[0]["c"], rows[0]["e"]) == (0, 0)

    async with running.client() as client:
        flowing = [asyncio.create_task(lane(number)) for number in range(LANES)]
        # The old rows arrive while commands flow, so pruning runs beside them.
        for chunk in range(CHUNKS):
            await _backdate(running, chunk)
            await asyncio.sleep(0.3)
        await eventually(old_rows_gone, timeout=60, interval=0.05)
        pruned.set()
        await asyncio.gather(*flowing)  # a failed command raises here
        # Every command sent is still remembered, and the pruner took nothing else.
        recent = await _sql(running, "SELECT count(*) AS n FROM commands")
        assert recent[0]["n"] == sum(sent) > LANES * 10
        for ref, count in zip(refs, sent, strict=True):
            assert await client.query(ref) == {"count": count}

    pruned_commands = await _metric(port_file, "pachyderm_pruned_total", retained="commands")
    pruned_effects = await _metric(port_file, "pachyderm_pruned_total", retained="effects")
    assert (pruned_commands, pruned_effects) == (OLD_COMMANDS, OLD_EFFECTS)


async def test_a_command_sent_before_the_window_is_refused_as_expired(
    running: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    running.start_worker("w1", **WINDOW)
    await running.balanced()
    ref = counter.Counter.ref("late")
    async with running.client() as client:
        assert await client.call(ref, counter.Increment(amount=1)) == {"count": 1}
        # This client's clock says the command left 3,541 s ago: past 3,600 s less 60.
        monkeypatch.setattr(expiry, "now_ms", lambda: time.time_ns() // 1_000_000 - 3_541_000)
        with pytest.raises(CommandExpiredError, match="accepted for 3540s"):
            await client.call(ref, counter.Increment(amount=10))
        # A clock an hour ahead is refused too: it would make old commands look new.
        monkeypatch.setattr(expiry, "now_ms", lambda: time.time_ns() // 1_000_000 + 3_600_000)
        with pytest.raises(InvalidSentTimeError, match="ahead"):
            await client.call(ref, counter.Increment(amount=100))
        # A command without a sent time (another language's publisher) is accepted.
        monkeypatch.setattr("pachyderm._client.stamped", lambda message: message)
        assert await client.call(ref, counter.Increment(amount=2)) == {"count": 3}
        monkeypatch.undo()
        assert await client.query(ref) == {"count": 3}
