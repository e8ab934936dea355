"""The entity listing part of the event store contract (mixed into :class:`EventStoreContract`).

Invariant: a backend lists the written entities (version 1 or more) of one type,
by id or by last change, a keyset page at a time: paging on from the last
entity's cursor reaches every entity once, and entities added meanwhile never
shift a page (none is skipped, none repeated).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import pytest

from .. import Ref
from ..store import Change, EventStore, NewEvent
from ..store._records import ListedEntity


def _ref(key: str, entity_type: str = "counter") -> Ref:
    return Ref.from_key(entity_type, key)


async def _write(store: EventStore, ref: Ref, expected: int = 0, events: int = 1) -> None:
    news = tuple(NewEvent("Added", b"{}") for _ in range(events))
    await store.commit([Change(ref, expected, f"{ref.id}/{expected}", news)])


async def _all_pages(
    store: EventStore, entity_type: str, limit: int, *, by_change: bool = False
) -> list[list[ListedEntity]]:
    pages: list[list[ListedEntity]] = []
    after: uuid.UUID | tuple[datetime, uuid.UUID] | None = None
    while page := await store.list_entities(
        entity_type, after=after, limit=limit, by_change=by_change
    ):
        pages.append(page)
        after = page[-1].cursor(by_change=by_change)
    return pages


class ListingStoreContract:
    """Entity listing tests every :class:`~pachyderm.store.EventStore` backend must pass."""

    async def test_entities_are_listed_by_id_a_page_at_a_time(self, store: EventStore) -> None:
        refs = [_ref(f"l{n}") for n in range(5)]
        for n, ref in enumerate(refs):
            await _write(store, ref, events=n + 1)
        pages = await _all_pages(store, "counter", 2)
        assert [len(page) for page in pages] == [2, 2, 1]
        listed = [entity for page in pages for entity in page]
        assert [e.entity_id for e in listed] == sorted(ref.id for ref in refs)
        versions = {ref.id: n + 1 for n, ref in enumerate(refs)}
        assert {e.entity_id: e.version for e in listed} == versions
        assert all(e.updated_at.utcoffset() is not None for e in listed)

    async def test_types_are_kept_apart(self, store: EventStore) -> None:
        await _write(store, _ref("a"))
        await _write(store, _ref("b", "other"))
        await _write(store, _ref("c", "other"))
        other = await store.list_entities("other")
        assert sorted(e.entity_id for e in other) == sorted(
            [_ref("b", "other").id, _ref("c", "other").id]
        )
        assert [e.entity_id for e in await store.list_entities("counter")] == [_ref("a").id]
        assert await store.list_entities("nobody") == []

    async def test_an_entity_never_written_is_not_listed(self, store: EventStore) -> None:
        await store.commit([Change(_ref("quiet"), 0, "nothing")])
        assert await store.list_entities("counter") == []

    async def test_the_cursor_holds_while_entities_are_added(self, store: EventStore) -> None:
        first = [_ref(f"old{n}") for n in range(6)]
        for ref in first:
            await _write(store, ref)
        page = await store.list_entities("counter", limit=3)
        cursor = page[-1].entity_id
        added = [_ref(f"new{n}") for n in range(20)]
        for ref in added:
            await _write(store, ref)
        rest = await store.list_entities("counter", after=cursor, limit=1000)
        seen = [e.entity_id for e in page] + [e.entity_id for e in rest]
        assert len(seen) == len(set(seen))  # none repeated
        expected = {ref.id for ref in first} | {ref.id for ref in added if ref.id > cursor}
        assert set(seen) == expected  # none skipped: every one old, and every new one after

    async def test_entities_are_listed_by_last_change(self, store: EventStore) -> None:
        a, b, c = _ref("ca"), _ref("cb"), _ref("cc")
        for ref in (a, b, c):
            await _write(store, ref)
            await asyncio.sleep(0.002)  # distinct times even where the clock is coarse
        await _write(store, a, expected=1)
        pages = await _all_pages(store, "counter", 1, by_change=True)
        listed = [entity for page in pages for entity in page]
        assert [e.entity_id for e in listed] == [b.id, c.id, a.id]
        assert [e.version for e in listed] == [1, 1, 2]
        assert listed[0].updated_at < listed[1].updated_at < listed[2].updated_at

    async def test_a_cursor_of_the_other_order_is_refused(self, store: EventStore) -> None:
        with pytest.raises(ValueError, match="goes on after"):
            await store.list_entities("counter", after=uuid.uuid4(), by_change=True)
        with pytest.raises(ValueError, match="goes on after"):
            await store.list_entities("counter", after=(datetime.now(), uuid.uuid4()))
