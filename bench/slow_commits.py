"""Slow commits on purpose, as on a host with a slow disk (issue 18).

With ``PACHYDERM_BENCH_COMMIT_DELAY`` set (seconds, e.g. ``0.002``), every schema
the benchmark creates for a design that stores its events (Pachyderm's namespace,
the naive worker's schema, the one-commit measurement's) gets a statement trigger
on its ``events`` table that sleeps that long: each transaction that writes events
(one per batch for Pachyderm, one per command for the naive worker) holds its locks
and keeps its caller waiting that much longer, as a slow fsync would. The raw
broker stores nothing and is not slowed. Unlike a slow fsync, the sleeps of
concurrent transactions do not overlap into one flush: the delay is never
shared, which favours no design that commits often.
"""

from __future__ import annotations

import os

import asyncpg

DELAY = "PACHYDERM_BENCH_COMMIT_DELAY"


def commit_delay() -> float:
    """Seconds each commit is slowed by (0: not slowed)."""
    return float(os.environ.get(DELAY) or 0)


async def slow_down(connection: asyncpg.Connection, schema: str) -> None:
    """Slow the commits that write to ``schema``'s ``events``, if asked to."""
    delay = commit_delay()
    if delay <= 0:
        return
    await connection.execute(
        f'CREATE FUNCTION "{schema}".bench_slow_commit() RETURNS trigger LANGUAGE plpgsql'
        f" AS $$ BEGIN PERFORM pg_sleep({delay!r}); RETURN NULL; END $$;"
        f' CREATE TRIGGER bench_slow_commit AFTER INSERT ON "{schema}".events'
        f' FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".bench_slow_commit()'
    )


async def slow_down_at(dsn: str, schema: str) -> None:
    """:func:`slow_down` on a connection of its own."""
    if commit_delay() <= 0:
        return
    connection = await asyncpg.connect(dsn)
    try:
        await slow_down(connection, schema)
    finally:
        await connection.close()
