"""Stored histories, one entity at a time, read from an event store.

What ``pachyderm export`` writes and ``pachyderm replay-check`` reads. Invariants:
memory holds one page of listed entities (or the sample being drawn) and a few
entities' histories at a time (the one in use and those read ahead), however many
entities the store has; an entity's
events are in version order, and its snapshot (the latest stored, if any) is of a
version among them, read in the same load as the events after it, so the two agree.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from ._reference import Ref
from .store import EventStore, ListedEntity, RecordedEvent, Snapshot

PAGE = 100  # entities listed per query
READ_AHEAD = 4  # histories read while the one before is checked


@dataclass(frozen=True, slots=True)
class StoredHistory:
    """An entity as stored: every event, oldest first, and its latest snapshot (if any)."""

    ref: Ref
    events: Sequence[RecordedEvent]
    snapshot: Snapshot | None = None

    @property
    def version(self) -> int:
        """The entity's version: that of its last event (0 for none)."""
        return self.events[-1].version if self.events else 0


async def read_history(store: EventStore, ref: Ref) -> StoredHistory:
    """``ref``'s whole history and latest snapshot.

    The snapshot comes with the events after it (one load); the events up to it
    are read after, which is safe because a history only grows at its end.
    """
    loaded = await store.load(ref)
    snapshot = loaded.snapshot
    head = await store.history(ref.id, 1, limit=snapshot.version) if snapshot else []
    return StoredHistory(ref, (*head, *loaded.events), snapshot)


async def listed(
    store: EventStore, entity_type: str, page: int = PAGE
) -> AsyncIterator[ListedEntity]:
    """Every written entity of ``entity_type``, by id, a page at a time."""
    after = None
    while True:
        found = await store.list_entities(entity_type, after=after, limit=page)
        for entity in found:
            yield entity
        if len(found) < page:
            return
        after = found[-1].entity_id


async def store_histories(
    store: EventStore,
    types: Sequence[str],
    *,
    sample: int | None = None,
    seed: int | None = None,
    read_ahead: int = READ_AHEAD,
) -> AsyncIterator[StoredHistory]:
    """The histories of every entity of ``types`` (type by type, by id), or of a uniform
    random ``sample`` of that many among them all (by type, then id).

    Up to ``read_ahead`` histories are read while the caller works on the one before
    (they wait on the database, it on the CPU); they are what memory holds.
    """
    refs = _sampled(store, types, sample, seed) if sample is not None else _all(store, types)
    pending: deque[asyncio.Task[StoredHistory]] = deque()
    try:
        async for ref in refs:
            pending.append(asyncio.ensure_future(read_history(store, ref)))
            if len(pending) > read_ahead:
                yield await pending.popleft()
        while pending:
            yield await pending.popleft()
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _all(store: EventStore, types: Sequence[str]) -> AsyncIterator[Ref]:
    for entity_type in types:
        async for entity in listed(store, entity_type):
            yield Ref(entity_type, entity.entity_id)


async def _sampled(
    store: EventStore, types: Sequence[str], size: int, seed: int | None
) -> AsyncIterator[Ref]:
    for ref in await sample_refs(store, types, size, random.Random(seed)):
        yield ref


async def sample_refs(
    store: EventStore, types: Sequence[str], size: int, rng: random.Random
) -> list[Ref]:
    """A uniform sample of ``size`` entities of ``types`` (all of them if fewer), drawn
    in one pass over the listing (reservoir sampling: only the sample is held)."""
    if size < 1:
        raise ValueError(f"a sample holds 1 entity or more, not {size}")
    chosen: list[Ref] = []
    seen = 0
    for entity_type in types:
        async for entity in listed(store, entity_type):
            seen += 1
            ref = Ref(entity_type, entity.entity_id)
            if len(chosen) < size:
                chosen.append(ref)
            elif (slot := rng.randrange(seen)) < size:
                chosen[slot] = ref
    return sorted(chosen, key=lambda ref: (ref.type, ref.id))
