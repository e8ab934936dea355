"""Context for the sequential latency: one durable commit of one change, alone.

What a worker waits for between deciding a command and replying to it:
``PostgresEventStore.commit`` of one change (one event, the command id and
its reply), one after the other, through the store's own pool.
"""

from __future__ import annotations

import time
import uuid

from examples.counter import Increased
from pachyderm import Ref
from pachyderm.store import Change, PostgresEventStore

from ..app import APP, ENTITY_TYPE
from ..fleet import percentile
from ..slow_commits import slow_down_at

AS_IS = "store"


async def _timed_commits(store: PostgresEventStore, commits: int) -> dict[str, float]:
    event = APP.entity_type(ENTITY_TYPE).encode_event(Increased(amount=1))
    ref = Ref(ENTITY_TYPE, uuid.uuid4())
    samples = []
    for version in range(commits):
        change = Change(ref, version, str(uuid.uuid4()), [event], b"\x80")
        started = time.perf_counter()
        await store.commit([change])
        samples.append(time.perf_counter() - started)
    return {"p50_ms": percentile(samples, 0.5) * 1000, "p99_ms": percentile(samples, 0.99) * 1000}


async def commit_latency(dsn: str, commits: int) -> dict[str, dict[str, float]]:
    """p50 and p99 milliseconds of a one-change commit."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    store = await PostgresEventStore.connect(dsn, schema=schema, max_size=2)
    try:
        await store.migrate()
        await slow_down_at(dsn, schema)
        return {AS_IS: await _timed_commits(store, commits)}
    finally:
        await store.drop_namespace()
        await store.close()
