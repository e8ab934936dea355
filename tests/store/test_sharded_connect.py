"""The options a sharded store is opened with reach each server's store (no servers:
each server's connect is recorded)."""

from __future__ import annotations

from typing import Any

import pytest

from pachyderm.store import PostgresEventStore, ShardedEventStore, ShardMap, open_store

A, B, COORDINATION = "postgresql://a/app", "postgresql://b/app", "postgresql://c/app"


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Each server's connect (URL and options), answered by a store without a pool."""
    calls: list[tuple[str, dict[str, Any]]] = []

    async def connect(dsn: str, **options: Any) -> PostgresEventStore:
        calls.append((dsn, options))
        return PostgresEventStore.__new__(PostgresEventStore)

    monkeypatch.setattr(PostgresEventStore, "connect", connect)
    return calls


async def test_each_server_gets_the_statement_timeout(
    opened: list[tuple[str, dict[str, Any]]],
) -> None:
    shards = ShardMap.parse(f"0-3={A} 4-7={B}", 8)
    store = await open_store(COORDINATION, namespace="ns", shards=shards, statement_timeout=2.5)
    assert isinstance(store, ShardedEventStore)
    assert sorted(url for url, _ in opened) == [A, B, COORDINATION]
    assert [options["statement_timeout"] for _, options in opened] == [2.5] * 3
    assert {options["schema"] for _, options in opened} == {"ns"}


async def test_without_one_each_server_waits_as_asyncpg_does(
    opened: list[tuple[str, dict[str, Any]]],
) -> None:
    await ShardedEventStore.connect(ShardMap.parse(f"0-7={A}", 8))
    assert [options["statement_timeout"] for _, options in opened] == [None]
