"""``pachyderm migrate``, ``inspect`` and ``list`` with a shard map: every server migrated,
an entity found on its server, a listing merged from all of them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import asyncpg
import pytest

from pachyderm import Ref
from pachyderm import _codec as codec
from pachyderm.cli import main
from pachyderm.store import Change, NewEvent, ShardedEventStore, ShardMap
from pachyderm.store._migrations import migrations_for

from .conftest import PARTITIONS, spread

pytestmark = pytest.mark.shards


@pytest.fixture
def sharded_cli(
    monkeypatch: pytest.MonkeyPatch, shard_urls: list[str], shard_map: ShardMap, namespace: str
) -> Iterator[list[str]]:
    """The options of a command line on the shard map (the first server coordinating)."""
    monkeypatch.setenv("PACHYDERM_DATABASE_SHARDS", spread(shard_urls))
    monkeypatch.setenv("PACHYDERM_PARTITIONS", str(PARTITIONS))
    yield ["--database-url", shard_urls[0], "--namespace", namespace]

    async def drop() -> None:
        store = await ShardedEventStore.connect(shard_map, schema=namespace, max_size=1)
        await store.drop_namespace()
        await store.close()

    asyncio.run(drop())


async def _versions(urls: list[str], namespace: str) -> list[int]:
    found = []
    for url in urls:
        connection = await asyncpg.connect(url, server_settings={"search_path": namespace})
        try:
            found.append(await connection.fetchval("SELECT max(version) FROM schema_migrations"))
        finally:
            await connection.close()
    return found


async def _seed(shard_map: ShardMap, namespace: str, refs: list[Ref]) -> None:
    store = await ShardedEventStore.connect(shard_map, schema=namespace, max_size=1)
    try:
        await store.commit(
            [
                Change(
                    ref,
                    0,
                    "c",
                    (NewEvent("Increased", codec.encode({"amount": 2})),),
                    partition=n * 5,
                )
                for n, ref in enumerate(refs)
            ]
        )
    finally:
        await store.close()


def test_migrate_inspect_and_list_reach_every_server(
    sharded_cli: list[str],
    shard_urls: list[str],
    shard_map: ShardMap,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*sharded_cli, "migrate"]) == 0
    latest = len(migrations_for("postgres"))
    assert (
        capsys.readouterr().out.strip()
        == f"schema of namespace {namespace!r} is at version {latest}"
    )
    assert asyncio.run(_versions(shard_urls, namespace)) == [latest] * 3

    refs = [Ref.from_key("counter", f"cli-{n}") for n in range(3)]  # partitions 0, 5, 10
    asyncio.run(_seed(shard_map, namespace, refs))
    for ref in refs:
        assert main([*sharded_cli, "inspect", "counter", str(ref.id), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert (shown["id"], shown["version"]) == (str(ref.id), 1)
    assert main([*sharded_cli, "list", "counter", "--json", "--limit", "10"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entity["id"] for entity in listed["entities"]] == sorted(str(r.id) for r in refs)
