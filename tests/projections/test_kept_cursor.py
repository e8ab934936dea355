"""An exactly-once runner keeps its cursor between batches: one round trip less per batch,
and a pause or a rebuild asked meanwhile is still obeyed (the batch's transaction
refuses a cursor that is no longer where the runner keeps it)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from pachyderm.projections import (
    Cursor,
    CursorStore,
    PostgresCursors,
    ProjectionRunner,
    RunnerOptions,
)

from ..waiting import eventually
from . import tally
from .conftest import Backend
from .test_runners import create_read_model, fold_of_the_log, read_model

pytestmark = pytest.mark.postgres


class Counted(PostgresCursors):
    """PostgreSQL's cursors, counting how often they are read."""

    reads = 0

    async def cursors(self, projection: str | None = None) -> list[Cursor]:
        self.reads += 1
        return await super().cursors(projection)


APP = tally.app(tally.Totals())


async def add(backend: Backend, entity: uuid.UUID, version: int, amount: int) -> None:
    await tally.commit(backend.store, APP, entity, version, tally.Added(amount))


async def runner_of(
    postgres: Backend,
    postgres_dsn: str,
    namespace: str,
    entity: uuid.UUID,
    *,
    cursors: CursorStore | None = None,
    options: RunnerOptions | None = None,
) -> ProjectionRunner:
    """The read model's tables and cursors made; a runner of ``entity``'s partition."""
    await create_read_model(postgres_dsn, namespace)
    await postgres.cursors.ensure("totals", 4)
    return ProjectionRunner(
        APP,
        postgres.store,
        cursors or postgres.cursors,
        APP.projection("totals"),
        entity.int % 4,
        options=options,
    )


async def test_a_runner_that_keeps_finding_events_reads_its_cursor_once(
    postgres: Backend, postgres_dsn: str, namespace: str
) -> None:
    entity = uuid.uuid4()
    counted = await Counted.connect(postgres_dsn, schema=namespace)
    assert isinstance(counted, Counted)
    try:
        runner = await runner_of(
            postgres,
            postgres_dsn,
            namespace,
            entity,
            cursors=counted,
            options=RunnerOptions(batch_size=2),
        )
        for version in range(6):
            await add(postgres, entity, version, version + 1)
        assert [await runner.step() for _ in range(4)] == [2, 2, 2, 0]
        await add(postgres, entity, 6, 7)
        assert await runner.step() == 1
        assert counted.reads == 1  # at the first step only
    finally:
        await counted.close()
    assert await read_model(postgres_dsn, namespace) == ({entity: 28}, 7)


async def test_a_pause_and_a_rebuild_asked_while_a_runner_keeps_its_cursor_are_obeyed(
    postgres: Backend, postgres_dsn: str, namespace: str
) -> None:
    entity = uuid.uuid4()
    runner = await runner_of(postgres, postgres_dsn, namespace, entity)
    await add(postgres, entity, 0, 1)
    assert await runner.step() == 1

    await postgres.cursors.set_paused("totals", True)
    await add(postgres, entity, 1, 2)
    assert await runner.step() == 0  # the batch's transaction sees the pause: no write
    assert await runner.step() == 0  # the cursor read afresh: paused
    assert await read_model(postgres_dsn, namespace) == ({entity: 1}, 1)
    await postgres.cursors.set_paused("totals", False)
    assert await runner.step() == 1
    assert await read_model(postgres_dsn, namespace) == ({entity: 3}, 2)

    await postgres.cursors.request_rebuild("totals")
    await add(postgres, entity, 2, 3)
    assert await runner.step() == 0  # refused: the cursor is marked for a rebuild
    assert await read_model(postgres_dsn, namespace) == ({entity: 3}, 2)
    assert await runner.step() == 0  # clears the read model, resets the cursors
    assert await read_model(postgres_dsn, namespace) == ({}, 0)
    assert await runner.step() == 3
    assert await read_model(postgres_dsn, namespace) == await fold_of_the_log(postgres, APP)


async def test_an_idle_running_runner_sees_a_rebuild_asked_while_nothing_comes(
    postgres: Backend, postgres_dsn: str, namespace: str
) -> None:
    entity = uuid.uuid4()
    runner = await runner_of(
        postgres,
        postgres_dsn,
        namespace,
        entity,
        options=RunnerOptions(min_interval=0.005, max_interval=0.05),
    )
    await add(postgres, entity, 0, 5)
    task = asyncio.create_task(runner.run())
    try:

        async def applied() -> bool:
            return await read_model(postgres_dsn, namespace) == ({entity: 5}, 1)

        await eventually(applied, timeout=10)
        await postgres.cursors.request_rebuild("totals")

        async def rebuilt() -> bool:
            cursors = await postgres.cursors.cursors("totals")
            return not any(c.rebuilding for c in cursors)

        await eventually(rebuilt, timeout=10)
        await eventually(applied, timeout=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
