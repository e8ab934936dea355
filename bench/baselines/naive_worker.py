"""Baseline: a task queue plus ``SELECT ... FOR UPDATE``, one transaction per command.

Run as ``python -m bench.baselines.naive_worker`` with the ``PACHYDERM_*`` variables a
worker gets (the benchmark starts it).

No batching and no cache: every command locks its counter's row, updates it
and appends its event in a transaction of its own, then replies. Its tables
live in a schema of their own (:func:`schema_name`), which the benchmark
creates (:func:`create_schema`) before the workers start.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgpack

from ._amqp import BaselineSettings, Command, serve

EVENT = "Increased"  # the registered name of the event Pachyderm's counter records

TABLES = """
CREATE TABLE counters (
    entity_id uuid PRIMARY KEY,
    version   bigint NOT NULL,
    count     bigint NOT NULL
);
CREATE TABLE events (
    entity_id   uuid        NOT NULL,
    version     bigint      NOT NULL,
    name        text        NOT NULL,
    data        bytea       NOT NULL,
    command_id  text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_id, version)
);
"""


def schema_name(namespace: str) -> str:
    return f"{namespace}_naive"


async def create_schema(dsn: str, namespace: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        schema = schema_name(namespace)
        await connection.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}";')
        await connection.execute(TABLES)
    finally:
        await connection.close()


async def drop_schema(dsn: str, namespace: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema_name(namespace)}" CASCADE')
    finally:
        await connection.close()


class NaiveCounters:
    """Counters in PostgreSQL, one transaction per command."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def apply(self, command: Command) -> tuple[int, Any]:
        if command.is_query:
            async with self.pool.acquire() as connection:
                row = await connection.fetchrow(
                    "SELECT version, count FROM counters WHERE entity_id = $1", command.entity_id
                )
            return (row["version"], {"count": row["count"]}) if row else (0, {"count": 0})
        amount = int(command.data["amount"])
        async with self.pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                "SELECT version, count FROM counters WHERE entity_id = $1 FOR UPDATE",
                command.entity_id,
            )
            if row is None:
                version, count = 1, amount
                await connection.execute(
                    "INSERT INTO counters (entity_id, version, count) VALUES ($1, $2, $3)",
                    command.entity_id,
                    version,
                    count,
                )
            else:
                version, count = row["version"] + 1, row["count"] + amount
                await connection.execute(
                    "UPDATE counters SET version = $2, count = $3 WHERE entity_id = $1",
                    command.entity_id,
                    version,
                    count,
                )
            await connection.execute(
                "INSERT INTO events (entity_id, version, name, data, command_id)"
                " VALUES ($1, $2, $3, $4, $5)",
                command.entity_id,
                version,
                EVENT,
                msgpack.packb({"amount": amount}),
                command.command_id,
            )
        return version, {"count": count}


async def run(settings: BaselineSettings) -> None:
    # One connection per consumed partition: a partition never waits for another's.
    size = max(1, len(settings.partitions))
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=size,
        max_size=size,
        server_settings={"search_path": schema_name(settings.topology.namespace)},
    )
    try:
        await serve(NaiveCounters(pool).apply, settings)
    finally:
        await pool.close()


def main() -> None:
    asyncio.run(run(BaselineSettings.from_environment()))


if __name__ == "__main__":
    main()
