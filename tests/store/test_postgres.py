"""The store contract on the machine's real PostgreSQL, plus what only PostgreSQL does."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

import asyncpg
import pytest

from pachyderm import EntityTypeMismatchError, Ref
from pachyderm.store import (
    Change,
    CommitOutcome,
    Committed,
    Conflict,
    Duplicate,
    EventStore,
    NewEffect,
    NewEvent,
    PostgresEventStore,
    Snapshot,
    SqliteEventStore,
)
from pachyderm.store._postgres import _COMMIT, commit_arguments
from pachyderm.testing import EventStoreContract, StoreFactory
from pachyderm.testing._store_contract import counter, events

from ..stores import migrated_stores

pytestmark = pytest.mark.postgres


@pytest.fixture
async def open_store(postgres_dsn: str, namespace: str) -> AsyncIterator[StoreFactory]:
    async with migrated_stores(
        lambda: PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=2)
    ) as factory:
        yield factory


class TestPostgresEventStore(EventStoreContract):
    pass


async def test_concurrent_migrations_on_a_fresh_namespace_all_succeed(
    postgres_dsn: str, namespace: str
) -> None:
    stores = [
        await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=1)
        for _ in range(6)
    ]
    try:
        versions = await asyncio.gather(*(store.migrate() for store in stores))
        assert len(set(versions)) == 1
        connection = await asyncpg.connect(postgres_dsn)
        try:
            applied = await connection.fetch(
                f'SELECT version FROM "{namespace}".schema_migrations ORDER BY version'
            )
        finally:
            await connection.close()
        assert [row["version"] for row in applied] == list(range(1, versions[0] + 1))
    finally:
        await stores[0].drop_namespace()
        for store in stores:
            await store.close()


async def test_namespaces_are_isolated(postgres_dsn: str, namespace: str) -> None:
    ref = Ref.from_key("counter", "shared-id")
    first = await PostgresEventStore.connect(postgres_dsn, schema=namespace)
    second = await PostgresEventStore.connect(postgres_dsn, schema=namespace + "_b")
    try:
        for store in (first, second):
            await store.migrate()
        await first.commit([Change(ref, 0, "c1", [NewEvent("a", b"")])])
        assert (await first.load(ref)).version == 1
        assert (await second.load(ref)).version == 0
    finally:
        for store in (first, second):
            await store.drop_namespace()
            await store.close()


async def test_a_released_connection_keeps_no_open_transaction(
    postgres_dsn: str, namespace: str
) -> None:
    # The pool skips asyncpg's reset query (the store keeps no session state),
    # but a transaction left open, as by a cancelled call, is still rolled back.
    store = await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=1)
    try:
        await store.migrate()
        async with store._pool.acquire() as connection:
            await connection.execute("BEGIN")
            await connection.execute("INSERT INTO workers (worker_id) VALUES ('abandoned')")
        async with store._pool.acquire() as connection:
            assert not connection.is_in_transaction()
            assert await connection.fetchval("SELECT count(*) FROM workers") == 0
    finally:
        await store.drop_namespace()
        await store.close()


def test_schema_names_are_checked() -> None:
    with pytest.raises(ValueError, match="schema name"):
        asyncio.run(PostgresEventStore.connect("postgresql://localhost/x", schema='x"; drop'))


# -- concurrent commits of pachyderm_commit ---------------------------------------


@pytest.fixture
async def store(open_store: StoreFactory) -> EventStore:
    return await open_store()


@asynccontextmanager
async def held_commit(
    dsn: str, namespace: str, changes: list[Change], *, commit: bool = True
) -> AsyncIterator[list[asyncpg.Record]]:
    """``pachyderm_commit`` of ``changes`` in a transaction held open until the block ends.

    ``changes`` must be sorted by entity id, as the store sorts them.
    """
    connection = await asyncpg.connect(dsn, server_settings={"search_path": namespace})
    try:
        transaction = connection.transaction()
        await transaction.start()
        try:
            yield await connection.fetch(_COMMIT, *commit_arguments(changes))
        except BaseException:
            await transaction.rollback()
            raise
        if commit:
            await transaction.commit()
        else:
            await transaction.rollback()
    finally:
        await connection.close()


async def waiting_for(held: Awaitable[list[CommitOutcome]]) -> asyncio.Task[list[CommitOutcome]]:
    """``held`` started, and seen waiting (for a lock the test holds)."""
    task = asyncio.ensure_future(held)
    await asyncio.sleep(0.3)
    assert not task.done(), "the commit did not wait for the other transaction"
    return task


@pytest.mark.parametrize("first_commits", [True, False])
async def test_two_transactions_creating_one_entity_both_finish_and_one_commits(
    store: EventStore, postgres_dsn: str, namespace: str, first_commits: bool
) -> None:
    ref, other = sorted([counter("contended"), counter("free")], key=lambda r: r.id)
    first = [Change(ref, 0, "first", events("a", "b"), b"first")]
    second = [Change(ref, 0, "second", events("c"), b"second"), Change(other, 0, "o", events("o"))]
    second.sort(key=lambda change: change.ref.id)
    async with held_commit(postgres_dsn, namespace, first, commit=first_commits) as rows:
        assert [row["outcome"] for row in rows] == ["c"]
        task = await waiting_for(store.commit(second))
    outcomes = dict(zip([c.ref for c in second], await task, strict=True))
    # No unique violation: the loser is refused as a conflict at the winner's version.
    if first_commits:
        assert outcomes == {ref: Conflict(2), other: Committed(1)}
        assert [e.command_id for e in await store.history(ref.id)] == ["first", "first"]
    else:
        assert outcomes == {ref: Committed(1), other: Committed(1)}
        assert [e.command_id for e in await store.history(ref.id)] == ["second"]
    assert await store.recorded([(ref.id, "first"), (ref.id, "second")]) == (
        {(ref.id, "first"): Duplicate(b"first", 2)}
        if first_commits
        else {(ref.id, "second"): Duplicate(b"second", 1)}
    )


async def test_the_commit_function_refuses_changes_not_sorted_by_entity(
    store: EventStore, postgres_dsn: str, namespace: str
) -> None:
    # It walks each entity's changes as one run: the store sorts them first.
    first, second = sorted([counter("1"), counter("2")], key=lambda ref: ref.id)
    changes = [Change(second, 0, "c1", events("a")), Change(first, 0, "c2", events("b"))]
    with pytest.raises(asyncpg.RaiseError, match="sorted by entity id"):
        async with held_commit(postgres_dsn, namespace, changes):
            pass
    assert await store.commit(changes) == [Committed(1), Committed(1)]


async def test_a_commit_waiting_for_a_row_checks_what_the_other_transaction_left(
    store: EventStore, postgres_dsn: str, namespace: str
) -> None:
    ref = counter()
    await store.commit([Change(ref, 0, "c0", events("a"))])
    # A command that makes no event leaves the version as it was: only the
    # command id tells its redelivery apart. Checked after the lock, the
    # redelivery is a duplicate (not a unique violation that fails its batch).
    effect_only = Change(ref, 1, "c1", (), b"r1", [NewEffect(uuid.uuid4(), "effect.e", b"")])
    async with held_commit(postgres_dsn, namespace, [effect_only]):
        redelivered = await waiting_for(store.commit([effect_only]))
    assert await redelivered == [Duplicate(b"r1", 1)]
    # And a change expecting the version the other transaction moved on from conflicts.
    async with held_commit(postgres_dsn, namespace, [Change(ref, 1, "c2", events("b"))]):
        stale = await waiting_for(store.commit([Change(ref, 1, "c3", events("c"))]))
    assert await stale == [Conflict(2)]
    assert len(await store.pending_effects()) == 1


async def test_overlapping_batches_never_fail_and_keep_histories_whole(
    open_store: StoreFactory,
) -> None:
    # Workers whose batches share entities, new and stored, in every order:
    # no deadlock, no unique violation, one winner per version.
    stores = [await open_store() for _ in range(6)]
    refs = [counter(f"e{n}") for n in range(24)]
    await stores[0].commit(
        [Change(ref, 0, f"setup-{n}", events("s")) for n, ref in enumerate(refs[::2])]
    )

    async def worker(number: int, store: EventStore) -> int:
        chosen = random.Random(number)
        committed = 0
        for round_ in range(15):
            picked = chosen.sample(refs, chosen.randint(1, 12))
            versions = await store.versions([ref.id for ref in picked])
            outcomes = await store.commit(
                [
                    Change(ref, versions.get(ref.id, 0), f"w{number}-{round_}", events("e"))
                    for ref in picked
                ]
            )
            assert all(isinstance(o, Committed | Conflict) for o in outcomes), outcomes
            committed += sum(isinstance(o, Committed) for o in outcomes)
        return committed

    committed = await asyncio.gather(*(worker(n, s) for n, s in enumerate(stores)))
    versions = await stores[0].versions([ref.id for ref in refs])
    assert sum(committed) + len(refs[::2]) == sum(versions.values())
    for ref in refs:
        history = await stores[0].history(ref.id)
        assert [e.version for e in history] == list(range(1, versions.get(ref.id, 0) + 1))


async def state_of(store: EventStore, refs: list[Ref], command_ids: list[str]) -> object:
    """All that a store holds about ``refs``, in a form to compare across backends."""
    entities = []
    for ref in refs:
        try:
            loaded = await store.load(ref)
        except EntityTypeMismatchError:
            loaded = None  # stored as the other type: that type's ref shows it
        entities.append(
            (
                ref,
                loaded and loaded.snapshot,
                [(e.version, e.name, e.data, e.command_id) for e in await store.history(ref.id)],
            )
        )
    pairs = [(ref.id, command_id) for ref in refs for command_id in command_ids]
    pending = await store.pending_effects(limit=10_000)
    return (
        entities,
        await store.versions([ref.id for ref in refs]),
        await store.recorded(pairs),
        sorted((e.effect_id, e.entity_id, e.command_id, e.payload) for e in pending),
    )


@pytest.mark.parametrize("seed", range(4))
async def test_random_batches_commit_as_on_sqlite(store: EventStore, seed: int) -> None:
    # SQLite applies a batch change by change, in Python: the reference. The
    # batches mix chained and stale versions, new and repeated command ids, a
    # few changes of the wrong type, events, effects and snapshots.
    reference = await SqliteEventStore.open(":memory:")
    chosen = random.Random(seed)
    ids = [Ref.from_key("counter", f"{seed}-{n}").id for n in range(6)]
    refs = [Ref(kind, id_) for id_ in ids for kind in ("counter", "account")]
    used: dict[uuid.UUID, list[str]] = {id_: ["never-committed"] for id_ in ids}
    try:
        await reference.migrate()
        for round_ in range(40):
            known = await reference.versions(ids)
            batch = []
            for number in range(chosen.randint(1, 16)):
                id_ = chosen.choice(ids)
                ref = Ref("account" if chosen.random() < 0.05 else "counter", id_)
                expected = max(0, known.get(id_, 0) + chosen.choice([0] * 6 + [1, -1]))
                if chosen.random() < 0.2:
                    command_id = chosen.choice(used[id_])
                else:
                    command_id = f"{round_}-{number}"
                    used[id_].append(command_id)
                made = events(*(f"{round_}-{number}" for _ in range(chosen.choice([0, 1, 1, 2]))))
                new_version = expected + len(made)
                batch.append(
                    Change(
                        ref,
                        expected,
                        command_id,
                        made,
                        f"{round_}-{number}".encode(),
                        [NewEffect(uuid.uuid4(), "effect.e", b"")] * chosen.choice([0, 0, 1]),
                        Snapshot(new_version, f"{round_}-{number}".encode())
                        if new_version > 0 and chosen.random() < 0.3
                        else None,
                    )
                )
                if chosen.random() < 0.8:  # mostly built on the change before
                    known[id_] = new_version
            assert await store.commit(batch) == await reference.commit(batch), (seed, round_)
        command_ids = sorted({command_id for ids_used in used.values() for command_id in ids_used})
        assert await state_of(store, refs, command_ids) == await state_of(
            reference, refs, command_ids
        )
    finally:
        await reference.close()
