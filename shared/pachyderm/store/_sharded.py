"""An event store spread over several PostgreSQL servers by partition (a shard map).

:class:`ShardedEventStore` is the same :class:`~pachyderm.store.EventStore` port,
delegating each call to the servers that can answer it:

- By partition: a commit's changes go to the server holding their partition, each
  server's share in one transaction of its own (the shares commit concurrently);
  the log, its wake-ups and due timers of a partition are read on its server.
- By entity: an entity's rows all live on its partition's server, since an entity
  always lands in one partition (the transport hashes its id). The store does not
  compute that hash (RabbitMQ's consistent-hash exchange does), so it learns each
  entity's server from the commits and loads it sees, and asks every server while
  it does not know (an entity has rows on one server only; the others answer as
  for an entity never written).
- Across partitions: listing, the log heads, the outbox sweep, counts and pruning
  ask every server and merge the answers in the port's order.

Invariants: no transaction spans two servers. A batch that fails on one server
raises (:class:`~pachyderm.StoreError`) even if the other servers' shares
committed; those changes are then recorded by command id, so the batch tried
again finds them as :class:`~pachyderm.store.Duplicate` and writes nothing twice.
Erasing an entity no server has written leaves its tombstone on every server, so
whichever server its partition maps to refuses it. The quarantine and the fleet's
own tables (membership, projection cursors) live on one coordination server; so
the fence at commit for parked entities (:class:`~pachyderm.store.Fenced`) holds
for the partitions on that server only: a commit on another server cannot see the
quarantine (the workers' own views of it still park those entities).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from .._errors import StoreError
from .._reference import Ref
from ._log_wakeups import LogWakeups
from ._port import EventStore
from ._postgres import PostgresEventStore
from ._quarantine import HasQuarantine, QuarantineStore
from ._records import (
    Change,
    CommitOutcome,
    Committed,
    Duplicate,
    Erasure,
    ListedEntity,
    LoadedEntity,
    LoggedEvent,
    OutboxEntry,
    RecordedEvent,
    StoredTimer,
)
from ._retention import Retained, check_limit
from ._shard_map import ShardMap, ShardMapError

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

# Entities whose server the store remembers (about 100 bytes each); beyond it the
# oldest learnt are forgotten and found again by asking every server.
HOMES_REMEMBERED = 200_000


class ShardedEventStore:
    """:class:`~pachyderm.store.EventStore` over the servers of a :class:`ShardMap`.

    ``stores[url]`` is the store on each URL of the map; ``coordination`` keeps the
    quarantine (by default the store of partition 0).
    """

    def __init__(
        self,
        shard_map: ShardMap,
        stores: Mapping[str, EventStore],
        coordination: EventStore | None = None,
    ) -> None:
        self.shard_map = shard_map
        self.stores = [stores[url] for url in shard_map.urls]
        self._of_partition = [stores[shard_map.url_of(p)] for p in range(shard_map.partitions)]
        self._server_of = [self.stores.index(store) for store in self._of_partition]
        self.coordination = coordination or self._of_partition[0]
        self._homes: dict[uuid.UUID, EventStore] = {}
        # Effects committed or swept and not yet marked published, by server.
        self._effect_homes: dict[uuid.UUID, EventStore] = {}

    @classmethod
    async def connect(
        cls,
        shard_map: ShardMap,
        *,
        schema: str = "pachyderm",
        coordination_url: str | None = None,
        max_size: int = 10,
        statement_timeout: float | None = None,
    ) -> ShardedEventStore:
        """Open a pool on each server of ``shard_map`` (and on ``coordination_url``,
        unless the map names it already), each with ``statement_timeout`` (see
        :meth:`PostgresEventStore.connect`): a cut from any one server holds no call."""
        urls = shard_map.urls
        if coordination_url is not None and coordination_url not in urls:
            urls = [*urls, coordination_url]
        connecting = [
            PostgresEventStore.connect(
                url, schema=schema, max_size=max_size, statement_timeout=statement_timeout
            )
            for url in urls
        ]
        results = await asyncio.gather(*connecting, return_exceptions=True)
        opened = [store for store in results if isinstance(store, PostgresEventStore)]
        if len(opened) < len(urls):  # none left open behind the error
            await _all(store.close() for store in opened)
            raise next(error for error in results if isinstance(error, BaseException))
        by_url: dict[str, EventStore] = dict(zip(urls, opened, strict=True))
        coordination = by_url[coordination_url] if coordination_url is not None else None
        return cls(shard_map, by_url, coordination)

    # -- routing ------------------------------------------------------------------

    def store_of(self, partition: int) -> EventStore:
        """The store holding ``partition``."""
        if not 0 <= partition < len(self._of_partition):
            raise ShardMapError(f"partition {partition} is not in 0..{len(self._of_partition) - 1}")
        return self._of_partition[partition]

    def server_of(self, partition: int) -> int:
        """The index in :attr:`stores` of the server holding ``partition`` (the group
        commit commits each server's share of its batches on its own)."""
        self.store_of(partition)  # refuses a partition past the map
        return self._server_of[partition]

    def _learn(self, entity_id: uuid.UUID, store: EventStore) -> None:
        _remember(self._homes, entity_id, store)

    def _by_home(
        self,
        entity_ids: Iterable[K],
        key: Callable[[K], uuid.UUID],
        homes: Mapping[uuid.UUID, EventStore] | None = None,
    ) -> list[list[K]]:
        """``entity_ids`` (or effect ids, by ``homes``) grouped by store (as
        :attr:`stores`): each known one to its server, each unknown one to every server."""
        homes = self._homes if homes is None else homes
        grouped: list[list[K]] = [[] for _ in self.stores]
        for item in entity_ids:
            home = homes.get(key(item))
            for index, store in enumerate(self.stores):
                if home is None or home is store:
                    grouped[index].append(item)
        return grouped

    async def _everywhere(self, call: Callable[[EventStore], Awaitable[T]]) -> list[T]:
        return await _all(call(store) for store in self.stores)

    async def _found(
        self, ref: Ref, *, use_snapshot: bool = True
    ) -> tuple[EventStore | None, LoadedEntity]:
        """The store holding ``ref`` (None when none or several do) and what it loads."""
        loaded = await self._everywhere(lambda store: store.load(ref, use_snapshot=use_snapshot))
        found = [
            (store, entity)
            for store, entity in zip(self.stores, loaded, strict=True)
            if entity.version != 0 or entity.ended is not None
        ]
        if len(found) == 1:
            self._learn(ref.id, found[0][0])
            return found[0]
        return None, found[0][1] if found else loaded[0]

    # -- the port -----------------------------------------------------------------

    async def migrate(self) -> int:
        """Migrate every server (and the coordination server); the lowest version."""
        stores = [*self.stores, *self._extra()]
        return min(await _all(store.migrate() for store in stores))

    async def load(self, ref: Ref, *, use_snapshot: bool = True) -> LoadedEntity:
        home = self._homes.get(ref.id)
        if home is None:
            return (await self._found(ref, use_snapshot=use_snapshot))[1]
        return await home.load(ref, use_snapshot=use_snapshot)

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        shares: dict[EventStore, list[int]] = defaultdict(list)
        for index, change in enumerate(changes):
            shares[self.store_of(change.partition)].append(index)
        committed = await _all(
            store.commit([changes[i] for i in indexes]) for store, indexes in shares.items()
        )
        outcomes: list[CommitOutcome | None] = [None] * len(changes)
        for (store, indexes), share in zip(shares.items(), committed, strict=True):
            for index, outcome in zip(indexes, share, strict=True):
                outcomes[index] = outcome
                self._learn(changes[index].ref.id, store)
                if isinstance(outcome, Committed):
                    for effect in changes[index].effects:
                        _remember(self._effect_homes, effect.effect_id, store)
        return [outcome for outcome in outcomes if outcome is not None]

    async def recorded(
        self, commands: Sequence[tuple[uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, str], Duplicate]:
        grouped = self._by_home(commands, _first)
        found = await _all(
            store.recorded(share) for store, share in zip(self.stores, grouped, strict=True)
        )
        return _merged(found)

    async def versions(self, entity_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        grouped = self._by_home(entity_ids, _itself)
        found = await _all(
            store.versions(share) for store, share in zip(self.stores, grouped, strict=True)
        )
        return _merged(found)

    async def history(
        self, entity_id: uuid.UUID, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        return await self._of_entity(
            entity_id, lambda store: store.history(entity_id, from_version, limit)
        )

    async def _of_entity(
        self, entity_id: uuid.UUID, call: Callable[[EventStore], Awaitable[list[T]]]
    ) -> list[T]:
        """``call`` on the entity's server, or the one non-empty answer of all servers."""
        home = self._homes.get(entity_id)
        if home is not None:
            return await call(home)
        return next((found for found in await self._everywhere(call) if found), [])

    async def list_entities(
        self,
        entity_type: str,
        *,
        after: uuid.UUID | tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
        by_change: bool = False,
    ) -> list[ListedEntity]:
        pages = await self._everywhere(
            lambda store: store.list_entities(
                entity_type, after=after, limit=limit, by_change=by_change
            )
        )
        # Each server's page is its first `limit` after the cursor: the first `limit`
        # of their union are the whole store's (a keyset merge).
        listed = [entity for page in pages for entity in page]
        if by_change:
            listed.sort(key=_by_change)
        else:
            listed.sort(key=_by_id)
        return listed[:limit]

    async def read_log(self, partition: int, after: int, limit: int) -> list[LoggedEvent]:
        return await self.store_of(partition).read_log(partition, after, limit)

    async def log_heads(self) -> dict[int, int]:
        return _merged(await self._everywhere(lambda store: store.log_heads()))

    def log_wakeups(self) -> LogWakeups:
        return ShardedWakeups(self)

    async def pending_effects(self, limit: int = 100, older_than: float = 0.0) -> list[OutboxEntry]:
        found = await self._everywhere(lambda store: store.pending_effects(limit, older_than))
        for store, share in zip(self.stores, found, strict=True):
            for entry in share:
                _remember(self._effect_homes, entry.effect_id, store)
        oldest = sorted((entry for share in found for entry in share), key=_created)
        return oldest[:limit]

    async def mark_published(self, effect_ids: Sequence[uuid.UUID]) -> None:
        # An effect unknown here goes to every server; each ignores the ids it lacks.
        grouped = self._by_home(effect_ids, _itself, self._effect_homes)
        await _all(
            store.mark_published(share)
            for store, share in zip(self.stores, grouped, strict=True)
            if share
        )
        for effect_id in effect_ids:
            self._effect_homes.pop(effect_id, None)

    async def postpone_effects(self, delays: Mapping[uuid.UUID, float]) -> None:
        grouped = self._by_home(delays, _itself, self._effect_homes)
        await _all(
            store.postpone_effects({effect_id: delays[effect_id] for effect_id in share})
            for store, share in zip(self.stores, grouped, strict=True)
            if share
        )

    async def due_timers(
        self, partition: int, until: datetime, limit: int, *, skip: Collection[uuid.UUID] = ()
    ) -> list[StoredTimer]:
        return await self.store_of(partition).due_timers(partition, until, limit, skip=skip)

    async def entity_timers(self, entity_id: uuid.UUID) -> list[StoredTimer]:
        return await self._of_entity(entity_id, lambda store: store.entity_timers(entity_id))

    async def hold_timers(self, keys: Sequence[tuple[uuid.UUID, str]]) -> None:
        grouped = self._by_home(keys, _first)
        await _all(
            store.hold_timers(share)
            for store, share in zip(self.stores, grouped, strict=True)
            if share
        )

    async def release_timer(self, entity_id: uuid.UUID, key: str) -> bool:
        home = self._homes.get(entity_id)
        stores = [home] if home is not None else self.stores
        return any(await _all(store.release_timer(entity_id, key) for store in stores))

    async def postpone_timers(
        self, delays: Mapping[tuple[uuid.UUID, str], float]
    ) -> dict[tuple[uuid.UUID, str], int]:
        grouped = self._by_home(delays, _first)
        found = await _all(
            store.postpone_timers({key: delays[key] for key in share})
            for store, share in zip(self.stores, grouped, strict=True)
            if share
        )
        return {key: attempts for counts in found for key, attempts in counts.items()}

    async def count_timers(self) -> int:
        return sum(await self._everywhere(lambda store: store.count_timers()))

    async def close(self) -> None:
        await _all(store.close() for store in [*self.stores, *self._extra()])

    async def prune(self, retained: Retained, older_than: float, limit: int) -> int:
        return await self._in_turn(
            lambda store, left: store.prune(retained, older_than, left), limit
        )

    async def count_prunable(self, retained: Retained, older_than: float) -> int:
        stores = [*self.stores, *self._extra()]
        return sum(await _all(store.count_prunable(retained, older_than) for store in stores))

    async def erase(self, ref: Ref) -> Erasure:
        home = self._homes.get(ref.id)
        if home is None:
            home, _ = await self._found(ref)
        if home is None:
            # Written nowhere (or erased everywhere): a tombstone on every server.
            everywhere = await self._everywhere(lambda store: store.erase(ref))
            return _with_quarantine(everywhere[0], everywhere[1:])
        if home is self.coordination:
            return await home.erase(ref)
        # The coordination server keeps the entity's poison commands: they go too (its
        # tombstone there refuses nothing: that server holds none of the entity's rows).
        erased, quarantine = await _all([home.erase(ref), self.coordination.erase(ref)])
        return _with_quarantine(erased, [quarantine])

    async def prune_ended(self, limit: int) -> int:
        return await self._in_turn(lambda store, left: store.prune_ended(left), limit)

    async def count_prunable_ended(self) -> int:
        return sum(await self._everywhere(lambda store: store.count_prunable_ended()))

    def quarantine_store(self) -> QuarantineStore:
        """The quarantine of the coordination server (the fleet's, not a partition's)."""
        if not isinstance(self.coordination, HasQuarantine):
            raise StoreError("the coordination store keeps no quarantine")
        return self.coordination.quarantine_store()

    # -- beyond the port ----------------------------------------------------------

    async def drop_namespace(self) -> None:
        """Delete the namespace's schema on every server (tests, tear-down)."""
        await _all(
            store.drop_namespace()
            for store in [*self.stores, *self._extra()]
            if isinstance(store, PostgresEventStore)
        )

    def _extra(self) -> list[EventStore]:
        """The coordination store when it is no shard's."""
        return [] if any(self.coordination is s for s in self.stores) else [self.coordination]

    async def _in_turn(self, call: Callable[[EventStore, int], Awaitable[int]], limit: int) -> int:
        """``call`` on each server in turn with what is left of ``limit``; the total done."""
        check_limit(limit)
        done = 0
        for store in [*self.stores, *self._extra()]:
            if done >= limit:
                break
            done += await call(store, limit - done)
        return done


class ShardedWakeups:
    """Each partition's wake-ups from its own server's listener."""

    def __init__(self, store: ShardedEventStore) -> None:
        self._store = store
        self._opened = {id(s): s.log_wakeups() for s in store.stores}

    def _wakeups(self, partition: int) -> LogWakeups:
        return self._opened[id(self._store.store_of(partition))]

    def generation(self, partition: int) -> int:
        return self._wakeups(partition).generation(partition)

    async def wait(self, partition: int, since: int, timeout: float) -> bool:
        return await self._wakeups(partition).wait(partition, since, timeout)

    async def close(self) -> None:
        await _all(wakeups.close() for wakeups in self._opened.values())


async def _all(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Every call's result, in order; the first failure raised once all have ended
    (none is left running behind the error)."""
    done: list[T] = []
    for result in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result
        done.append(result)
    return done


def _remember(homes: dict[uuid.UUID, EventStore], key: uuid.UUID, store: EventStore) -> None:
    """``homes[key] = store``, forgetting the oldest beyond :data:`HOMES_REMEMBERED`."""
    if key not in homes and len(homes) >= HOMES_REMEMBERED:
        del homes[next(iter(homes))]
    homes[key] = store


def _with_quarantine(erasure: Erasure, others: Sequence[Erasure]) -> Erasure:
    """``erasure`` counting the quarantined commands the ``others`` deleted too."""
    extra = sum(other.quarantined for other in others)
    return dataclasses.replace(erasure, quarantined=erasure.quarantined + extra)


def _merged(found: Iterable[Mapping[K, V]]) -> dict[K, V]:
    merged: dict[K, V] = {}
    for answer in found:
        merged.update(answer)
    return merged


def _first(pair: tuple[uuid.UUID, str]) -> uuid.UUID:
    return pair[0]


def _itself(entity_id: uuid.UUID) -> uuid.UUID:
    return entity_id


def _by_id(entity: ListedEntity) -> uuid.UUID:
    return entity.entity_id


def _by_change(entity: ListedEntity) -> tuple[datetime, uuid.UUID]:
    return (entity.updated_at, entity.entity_id)


def _created(entry: OutboxEntry) -> datetime:
    return entry.created_at
