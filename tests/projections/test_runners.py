"""Runners over the real log: at least once on SQLite, exactly once on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from typing import Any

import asyncpg
import pytest

from pachyderm import PachydermError
from pachyderm.fleet import PostgresMembership, SoloMembership
from pachyderm.projections import ProjectionProcess, ProjectionRunner, RunnerOptions

from ..waiting import eventually
from . import tally
from .conftest import Backend

PARTITIONS = 4
FAST = RunnerOptions(batch_size=7, min_interval=0.005, max_interval=0.05)


@contextlib.asynccontextmanager
async def running(process: ProjectionProcess) -> Any:
    stop = asyncio.Event()
    task = asyncio.create_task(process.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await task


async def write_tallies(
    backend: Backend, app: Any, entities: int, each: int
) -> dict[uuid.UUID, list[int]]:
    """Commit ``each`` events (an Added or a Noted by turns) to each of ``entities``
    tallies, the tallies concurrently; what each tally was added."""
    added: dict[uuid.UUID, list[int]] = {}

    async def one(entity: uuid.UUID) -> None:
        added[entity] = []
        for version in range(each):
            if version % 3 == 2:
                await tally.commit(backend.store, app, entity, version, tally.Noted("n"))
            else:
                added[entity].append(version + 1)
                await tally.commit(backend.store, app, entity, version, tally.Added(version + 1))

    await asyncio.gather(*(one(uuid.uuid4()) for _ in range(entities)))
    return added


async def log_heads_total(backend: Backend) -> int:
    return sum((await backend.store.log_heads()).values())


async def test_an_at_least_once_projection_gets_every_event_in_per_entity_order(
    sqlite: Backend,
) -> None:
    recorder = tally.Recorder()
    app = tally.app(recorder)
    process = ProjectionProcess(
        app, sqlite.store, sqlite.cursors, SoloMembership(), partitions=PARTITIONS, options=FAST
    )
    async with running(process):
        added = await write_tallies(sqlite, app, entities=6, each=10)

        async def caught_up() -> bool:
            cursors = await sqlite.cursors.cursors("recorder")
            heads = await sqlite.store.log_heads()
            return all(c.position == heads.get(c.partition, 0) for c in cursors)

        await eventually(caught_up, timeout=10)
    by_entity: dict[uuid.UUID, list[int]] = defaultdict(list)
    for entity, version, amount in recorder.seen:
        assert amount == version  # Added(version) was committed at that version
        by_entity[entity].append(version)
    # Every Added, once here (nothing was interrupted), in version order; no Noted.
    assert dict(by_entity) == added


async def test_a_postgres_projection_refuses_sqlite(sqlite: Backend) -> None:
    app = tally.app(tally.Totals())
    with pytest.raises(PachydermError, match="PostgreSQL only"):
        ProjectionProcess(app, sqlite.store, sqlite.cursors, SoloMembership(), partitions=1)


async def read_model(postgres_dsn: str, namespace: str) -> tuple[dict[uuid.UUID, int], int]:
    connection = await asyncpg.connect(postgres_dsn, server_settings={"search_path": namespace})
    try:
        totals = {r["entity_id"]: r["total"] for r in await connection.fetch("TABLE tally_totals")}
        applied = await connection.fetchval("SELECT count(*) FROM tally_applied")
        return totals, applied
    finally:
        await connection.close()


async def fold_of_the_log(backend: Backend, app: Any) -> tuple[dict[uuid.UUID, int], int]:
    """Each tally's total and how many Added events, by reading the whole log."""
    totals: dict[uuid.UUID, int] = defaultdict(int)
    count = 0
    for partition in await backend.store.log_heads():
        for logged in await backend.store.read_log(partition, 0, 1_000_000):
            event = app.entity_type("tally").decode_event(logged.event.name, logged.event.data)
            if isinstance(event, tally.Added):
                totals[logged.event.entity_id] += event.amount
                count += 1
    return dict(totals), count


async def create_read_model(postgres_dsn: str, namespace: str) -> None:
    connection = await asyncpg.connect(postgres_dsn, server_settings={"search_path": namespace})
    try:
        await connection.execute(tally.READ_MODEL)
    finally:
        await connection.close()


@pytest.mark.postgres
async def test_an_exactly_once_read_model_equals_the_fold_of_the_log(
    postgres: Backend, postgres_dsn: str, namespace: str
) -> None:
    await create_read_model(postgres_dsn, namespace)
    app = tally.app(tally.Totals())
    # Two processes of one projection fleet: the partitions are split between them.
    processes = [
        ProjectionProcess(
            app,
            postgres.store,
            postgres.cursors,
            SoloMembership(f"p{n}"),
            partitions=PARTITIONS,
            options=FAST,
        )
        for n in range(2)
    ]
    async with running(processes[0]), running(processes[1]):
        # Both run every partition (solo memberships): the cursors' compare-and-set
        # is all that keeps them from applying a batch twice.
        await write_tallies(postgres, app, entities=12, each=15)
        expected = await fold_of_the_log(postgres, app)

        async def caught_up() -> bool:
            return await read_model(postgres_dsn, namespace) == expected

        await eventually(caught_up, timeout=10)


@pytest.mark.postgres
async def test_a_runner_cancelled_between_apply_and_commit_resumes_losing_and_repeating_nothing(
    postgres: Backend, postgres_dsn: str, namespace: str
) -> None:
    await create_read_model(postgres_dsn, namespace)
    stalling = tally.Totals(stall_at=5)
    app = tally.app(stalling)
    added = await write_tallies(postgres, app, entities=3, each=12)
    # The fullest partition (at least one tally's 8 Added), read in a single batch.
    heads = await postgres.store.log_heads()
    partition = max(heads, key=heads.__getitem__)
    await postgres.cursors.ensure("totals", PARTITIONS)
    runner = ProjectionRunner(
        app,
        postgres.store,
        postgres.cursors,
        stalling,
        partition,
        options=RunnerOptions(batch_size=100, min_interval=0.005),
    )
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(stalling.stalled.wait(), 10)
    # Four events applied in the open transaction, the fifth under way: stop it there.
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    [cursor] = [c for c in await postgres.cursors.cursors("totals") if c.partition == partition]
    assert cursor.position == 0
    assert await read_model(postgres_dsn, namespace) == ({}, 0)
    # Another runner (no stall) takes over every partition and catches up.
    app = tally.app(tally.Totals())
    process = ProjectionProcess(
        app, postgres.store, postgres.cursors, SoloMembership(), partitions=PARTITIONS, options=FAST
    )
    expected = await fold_of_the_log(postgres, app)
    assert expected[1] == sum(len(v) for v in added.values())
    async with running(process):

        async def caught_up() -> bool:
            return await read_model(postgres_dsn, namespace) == expected

        await eventually(caught_up, timeout=10)
    # Every event applied once: tally_applied's key would refuse a second time, and the
    # count of its rows equals the log's.


class Batches(tally.Recorder):
    """Takes each batch at once, as a bulk writer would."""

    name = "batches"

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    async def apply_many(self, batch: Any) -> None:
        self.sizes.append(len(batch))
        self.seen.extend((c.entity_id, c.version, event.amount) for event, c in batch)


async def test_apply_many_takes_the_events_of_a_batch_at_once(sqlite: Backend) -> None:
    batches = Batches()
    app = tally.app(batches)
    added = await write_tallies(sqlite, app, entities=1, each=30)  # 20 Added, 10 Noted
    [entity] = added
    await sqlite.cursors.ensure("batches", PARTITIONS)
    runner = ProjectionRunner(
        app, sqlite.store, sqlite.cursors, batches, entity.int % PARTITIONS, options=FAST
    )
    while await runner.step():
        pass
    # Batches of 7 log positions, the Noted ones (every third) left out.
    assert batches.sizes == [5, 5, 4, 5, 1]
    assert [version for _, version, _ in batches.seen] == added[entity]


@pytest.mark.postgres
async def test_projection_processes_split_the_partitions_and_take_over_a_leaving_ones(
    postgres: Backend, postgres_dsn: str, namespace: str
) -> None:
    await create_read_model(postgres_dsn, namespace)
    app = tally.app(tally.Totals())
    members = [
        await PostgresMembership.connect(
            postgres_dsn,
            worker_id=f"p{n}",
            schema=namespace,
            heartbeat_interval=0.1,
            dead_after=0.3,
            fleet="projections",
        )
        for n in range(2)
    ]
    first, second = (
        ProjectionProcess(
            app, postgres.store, postgres.cursors, member, partitions=PARTITIONS, options=FAST
        )
        for member in members
    )
    try:
        async with running(second):
            async with running(first):

                async def split() -> bool:
                    # Each runs its half, none both (a hand-over may overlap briefly).
                    halves = sorted(first.owned + second.owned)
                    return len(first.owned) == 2 and halves == list(range(PARTITIONS))

                await eventually(split, timeout=10)
                await write_tallies(postgres, app, entities=8, each=9)
            # The first left: the second takes its partitions, and the read model catches up.

            async def all_taken() -> bool:
                return second.owned == list(range(PARTITIONS))

            await eventually(all_taken, timeout=10)
            await write_tallies(postgres, app, entities=8, each=9)
            expected = await fold_of_the_log(postgres, app)

            async def caught_up() -> bool:
                return await read_model(postgres_dsn, namespace) == expected

            await eventually(caught_up, timeout=10)
    finally:
        for member in members:
            await member.close()


async def test_a_runner_without_its_cursor_says_so(sqlite: Backend) -> None:
    recorder = tally.Recorder()
    runner = ProjectionRunner(tally.app(recorder), sqlite.store, sqlite.cursors, recorder, 2)
    with pytest.raises(PachydermError, match="no cursor for partition 2"):
        await runner.step()
