"""The integration tests' fleet (worker processes serving examples.demo:APP) and the
checks every run ends with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pachyderm import Ref
from pachyderm.store import PostgresEventStore
from pachyderm.testing import ProcessFleet, process_fleet

ROOT = Path(__file__).resolve().parents[2]
Fleet = ProcessFleet


@asynccontextmanager
async def fleet(
    folder: Path, namespace: str, dsn: str, amqp_url: str, partitions: int = 8
) -> AsyncIterator[ProcessFleet]:
    async with process_fleet(
        folder, namespace, dsn, amqp_url, app="examples.demo:APP", partitions=partitions, cwd=ROOT
    ) as running:
        yield running


def fleet_fixture(
    app: str, partitions: int, *, name: str = "fleet"
) -> Callable[..., AsyncIterator[ProcessFleet]]:
    """A test's fixture ``name``: a fleet of ``app`` on ``partitions`` in the test's own
    namespace (no worker started), stopped and removed after the test."""

    @pytest.fixture(name=name)
    async def running(
        tmp_path: Path, namespace: str, postgres_dsn: str, rabbitmq_url: str
    ) -> AsyncIterator[ProcessFleet]:
        async with process_fleet(
            tmp_path,
            namespace,
            postgres_dsn,
            rabbitmq_url,
            app=app,
            partitions=partitions,
            cwd=ROOT,
        ) as started:
            yield started

    return running


@asynccontextmanager
async def fleet_store(
    running: ProcessFleet, max_size: int = 4
) -> AsyncIterator[PostgresEventStore]:
    """The fleet's store, to read what the workers wrote; closed on exit."""
    opened = await PostgresEventStore.connect(
        running.dsn, schema=running.topology.namespace, max_size=max_size
    )
    try:
        yield opened
    finally:
        await opened.close()


# -- checks ------------------------------------------------------------------------


async def _fetch(dsn: str, namespace: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn, server_settings={"search_path": namespace})
    try:
        return list(await connection.fetch(query))
    finally:
        await connection.close()


async def outbox_command_ids(dsn: str, namespace: str) -> set[str]:
    """The commands that wrote effects to the outbox."""
    rows = await _fetch(dsn, namespace, "SELECT command_id FROM outbox")
    return {row["command_id"] for row in rows}


async def histories(dsn: str, namespace: str) -> dict[Any, list[asyncpg.Record]]:
    """Every event of the namespace, by entity, in version order."""
    rows = await _fetch(
        dsn,
        namespace,
        "SELECT entity_id, version, name, data, command_id FROM events ORDER BY entity_id, version",
    )
    found: dict[Any, list[asyncpg.Record]] = {}
    for row in rows:
        found.setdefault(row["entity_id"], []).append(row)
    return found


def assert_gapless(history: dict[Any, list[asyncpg.Record]]) -> None:
    for entity_id, events in history.items():
        versions = [event["version"] for event in events]
        assert versions == list(range(1, len(events) + 1)), f"gap in {entity_id}: {versions}"


def counter_ref(number: int) -> Ref:
    return Ref.from_key("counter", f"load-{number}")
