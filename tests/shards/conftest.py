"""Three private PostgreSQL servers for the whole shard test session (ports 5781-5783)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from chaos.services import ServiceUnavailableError
from pachyderm.store import ShardedEventStore, ShardMap

from .servers import private_servers

PORTS = (5781, 5782, 5783)
PARTITIONS = 16


@pytest.fixture(scope="session")
def shard_urls() -> Iterator[list[str]]:
    try:
        with private_servers(PORTS) as urls:
            yield urls
    except ServiceUnavailableError as error:
        if os.environ.get("CI"):
            pytest.fail(f"private PostgreSQL servers cannot start: {error}")
        pytest.skip(f"private PostgreSQL servers cannot start: {error}")


def spread(urls: list[str]) -> str:
    """The shard map of the tests: partitions 0-1, 2-4 and 5-15 on the three servers
    (the contract's partitions, 0 to 7, then land on every server)."""
    first, second, third = urls
    return f"0-1={first} 2-4={second},5-{PARTITIONS - 1}={third}"


@pytest.fixture
def shard_map(shard_urls: list[str]) -> ShardMap:
    return ShardMap.parse(spread(shard_urls), PARTITIONS)


@pytest.fixture
async def sharded(shard_map: ShardMap, namespace: str) -> AsyncIterator[ShardedEventStore]:
    """A migrated store on the test's namespace over the three servers, dropped after."""
    store = await ShardedEventStore.connect(shard_map, schema=namespace, max_size=4)
    await store.migrate()
    try:
        yield store
    finally:
        await store.drop_namespace()
        await store.close()
