"""During its rolling upgrade, workers of the release before schema versions still
commit through the old entry points (``pachyderm_commit_logged``): they keep working,
write every event at schema version 1, and a snapshot they write has no fingerprint."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pachyderm.store import Change, NewEvent, PostgresEventStore, Snapshot
from pachyderm.store._postgres import commit_arguments
from pachyderm.testing._store_contract import counter

pytestmark = pytest.mark.postgres

PREVIOUS = (
    "SELECT outcome, version, reply FROM pachyderm_commit_logged("
    + ", ".join(f"${n}" for n in range(1, 26))
    + ")"
)


@pytest.fixture
async def store(postgres_dsn: str, namespace: str) -> AsyncIterator[PostgresEventStore]:
    store = await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=2)
    await store.migrate()
    yield store
    await store.drop_namespace()
    await store.close()


async def test_the_previous_release_commits_without_versions_or_fingerprints(
    store: PostgresEventStore,
) -> None:
    ref = counter("upgraded")
    await store.commit(
        [Change(ref, 0, "c1", (NewEvent("a", b"a", 3),), snapshot=Snapshot(1, b"s1", "f"))]
    )
    change = Change(ref, 1, "c2", (NewEvent("b", b"b", 5),), snapshot=Snapshot(2, b"s2", "g"))
    async with store._pool.acquire() as connection:
        rows = await connection.fetch(PREVIOUS, *commit_arguments([change])[:25])
    assert [(row["outcome"], row["version"]) for row in rows] == [("c", 2)]
    loaded = await store.load(ref, use_snapshot=False)
    assert [(e.name, e.schema_version) for e in loaded.events] == [("a", 3), ("b", 1)]
    # Replaced by a writer that knows no fingerprints: none, not the one before.
    assert (await store.load(ref)).snapshot == Snapshot(2, b"s2", None)
