"""Workload 5: cold load of an entity with 10, 1,000 and 100,000 events.

Cold means not in any worker's cache: ``store.load`` and the fold
(``replay``), as a worker does for an entity it has not seen. The histories are
written straight through the store (``PostgresEventStore.commit``, 1,000
events per change). With snapshots, the latest snapshot is as far behind the
head as the default ``PACHYDERM_SNAPSHOT_EVERY=100`` ever leaves it: 99
events, which the fold still has to apply.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator

from examples.counter import Increased
from pachyderm import Ref
from pachyderm.store import Change, NewEvent, PostgresEventStore, Snapshot

from ..app import APP, ENTITY_TYPE
from ..config import Sizes

CHUNK = 1_000
CHANGES_PER_COMMIT = 10
SNAPSHOT_EVERY = 100
WORST_BEHIND = SNAPSHOT_EVERY - 1
SNAPSHOT_SUFFIX = "_snapshot"


def _chunks(events: int, snapshot_at: int | None) -> Iterator[tuple[int, int]]:
    """(first version, last version) of each change; one ends exactly at the snapshot."""
    boundaries = sorted(
        {*range(CHUNK, events, CHUNK), events, *([snapshot_at] if snapshot_at else [])}
    )
    first = 1
    for last in sorted(boundaries):
        yield first, last
        first = last + 1


async def seed(store: PostgresEventStore, events: int) -> Ref:
    """A counter with ``events`` increments of 1; a snapshot 99 behind the head if it has 100+."""
    counter = APP.entity_type(ENTITY_TYPE)
    ref = Ref(ENTITY_TYPE, uuid.uuid4())
    event: NewEvent = counter.encode_event(Increased(amount=1))
    snapshot_at = events - WORST_BEHIND if events >= SNAPSHOT_EVERY else None
    changes = [
        Change(
            ref,
            first - 1,
            str(uuid.uuid4()),
            [event] * (last - first + 1),
            b"\xc0",
            snapshot=(
                Snapshot(last, counter.encode_state({"count": last}))
                if last == snapshot_at
                else None
            ),
        )
        for first, last in _chunks(events, snapshot_at)
    ]
    for start in range(0, len(changes), CHANGES_PER_COMMIT):
        await store.commit(changes[start : start + CHANGES_PER_COMMIT])
    return ref


async def time_loads(
    store: PostgresEventStore, ref: Ref, events: int, *, snapshot: bool, repeats: int
) -> float:
    """Median milliseconds to load and fold ``ref``; checks the state it folds to."""
    counter = APP.entity_type(ENTITY_TYPE)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        loaded = await store.load(ref, use_snapshot=snapshot)
        state = counter.replay(loaded)
        samples.append((time.perf_counter() - started) * 1000)
        if state != {"count": events} or loaded.version != events:
            raise AssertionError(f"{ref} folded to {state} at {loaded.version}, not {events}")
    return statistics.median(samples)


async def cold_loads(dsn: str, sizes: Sizes) -> dict[str, float]:
    """Milliseconds per cold load, by label (``"100000"``, ``"100000_snapshot"``...)."""
    store = await PostgresEventStore.connect(
        dsn, schema=f"bench_{uuid.uuid4().hex[:10]}", max_size=2
    )
    try:
        await store.migrate()
        timings: dict[str, float] = {}
        biggest = max(sizes.cold_load_events.values())
        for label, events in sizes.cold_load_events.items():
            ref = await seed(store, events)
            heavy = events == biggest
            repeats = (
                sizes.cold_load_repeats_unsnapshotted_big if heavy else sizes.cold_load_repeats
            )
            timings[label] = await time_loads(store, ref, events, snapshot=False, repeats=repeats)
            if events >= SNAPSHOT_EVERY:
                timings[label + SNAPSHOT_SUFFIX] = await time_loads(
                    store, ref, events, snapshot=True, repeats=sizes.cold_load_repeats
                )
        return timings
    finally:
        await store.drop_namespace()
        await store.close()
