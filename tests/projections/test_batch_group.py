"""An exactly-once projection's ready batches of several partitions commit in one
transaction (PostgresCursors.apply_batches, BatchGroup), each under its cursor's
compare-and-set; a failing batch fails alone."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from pachyderm import ProjectionContext
from pachyderm.fleet import SoloMembership
from pachyderm.projections import (
    PostgresCursors,
    ProjectionProcess,
    ProjectionRunner,
    RunnerOptions,
)
from pachyderm.projections._group import BatchGroup
from pachyderm.projections._runner import apply_events

from ..waiting import eventually
from . import tally
from .conftest import Backend
from .test_runners import (
    PARTITIONS,
    create_read_model,
    fold_of_the_log,
    read_model,
    running,
    write_tallies,
)

pytestmark = pytest.mark.postgres


async def positions(backend: Backend, projection: str = "p") -> dict[int, int]:
    return {c.partition: c.position for c in await backend.cursors.cursors(projection)}


async def cursors_of(backend: Backend, partitions: int) -> PostgresCursors:
    """The backend's cursors, projection ``p``'s made."""
    assert isinstance(backend.cursors, PostgresCursors)
    await backend.cursors.ensure("p", partitions)
    return backend.cursors


async def test_apply_batches_moves_the_cursors_still_where_they_were_read(
    postgres: Backend,
) -> None:
    cursors = await cursors_of(postgres, 4)
    assert await cursors.advance("p", 1, 0, 3)  # partition 1 moved by another runner
    seen: list[frozenset[int]] = []

    async def work(connection: Any, moved: frozenset[int]) -> None:
        seen.append(moved)

    moves = [(0, 0, 5), (1, 0, 2), (2, 0, 7)]
    assert await cursors.apply_batches("p", moves, work) == {0, 2}
    assert seen == [{0, 2}]
    assert await positions(postgres) == {0: 5, 1: 3, 2: 7, 3: 0}
    # None still where it was read: nothing written, work not run.
    assert await cursors.apply_batches("p", [(0, 0, 9), (1, 0, 9)], work) == frozenset()
    assert len(seen) == 1


async def test_apply_batches_refuses_paused_and_rebuilding_cursors_and_rolls_back_on_failure(
    postgres: Backend,
) -> None:
    cursors = await cursors_of(postgres, 2)

    async def work(connection: Any, moved: frozenset[int]) -> None:
        """Nothing to write."""

    await cursors.set_paused("p", True)
    assert await cursors.apply_batches("p", [(0, 0, 1), (1, 0, 1)], work) == frozenset()
    await cursors.set_paused("p", False)
    await cursors.request_rebuild("p")
    assert await cursors.apply_batches("p", [(0, 0, 1)], work) == frozenset()
    assert await cursors.rebuild("p", work_clear)

    async def failing(connection: Any, moved: frozenset[int]) -> None:
        raise RuntimeError("the read model refused")

    with pytest.raises(RuntimeError, match="refused"):
        await cursors.apply_batches("p", [(0, 0, 1), (1, 0, 1)], failing)
    assert await positions(postgres) == {0: 0, 1: 0}


async def work_clear(connection: Any) -> None:
    """A read model with nothing to clear."""


class Counting(PostgresCursors):
    """PostgreSQL's cursors, recording each grouped transaction's partitions."""

    groups: list[list[int]]

    async def apply_batches(
        self,
        projection: str,
        moves: Sequence[tuple[int, int, int]],
        work: Callable[[Any, frozenset[int]], Awaitable[None]],
    ) -> frozenset[int]:
        self.groups.append([partition for partition, _, _ in moves])
        return await super().apply_batches(projection, moves, work)


async def counting(postgres_dsn: str, namespace: str) -> Counting:
    cursors = await Counting.connect(postgres_dsn, schema=namespace)
    assert isinstance(cursors, Counting)
    cursors.groups = []
    return cursors


async def one_entity_per_partition(backend: Backend) -> list[uuid.UUID]:
    """An entity in each partition, each given Added(1) and Added(2)."""
    entities: dict[int, uuid.UUID] = {}
    while len(entities) < PARTITIONS:
        entity = uuid.uuid4()
        entities.setdefault(entity.int % PARTITIONS, entity)
    for entity in entities.values():
        await tally.commit(backend.store, APP, entity, 0, tally.Added(1), tally.Added(2))
    return [entities[p] for p in range(PARTITIONS)]


APP = tally.app(tally.Totals())


def group_of(cursors: PostgresCursors, projection: Any) -> BatchGroup:
    return group_of_app(cursors, APP, projection)


def group_of_app(cursors: PostgresCursors, app: Any, projection: Any) -> BatchGroup:
    async def apply(chosen: list[Any], connection: Any) -> None:
        await apply_events(app, projection, chosen, connection)

    return BatchGroup(cursors, projection.name, apply)


async def ready_batches(backend: Backend) -> list[Any]:
    """Each partition's log from 0, as a runner would hand it to the group."""
    found = []
    for partition in range(PARTITIONS):
        logged = await backend.store.read_log(partition, 0, 100)
        found.append((partition, 0, logged[-1].position, logged))
    return found


async def test_batches_ready_at_once_commit_in_one_transaction(
    postgres: Backend, postgres_dsn: str, namespace: str
) -> None:
    await create_read_model(postgres_dsn, namespace)
    await one_entity_per_partition(postgres)
    cursors = await counting(postgres_dsn, namespace)
    try:
        await cursors.ensure("totals", PARTITIONS)
        projection = APP.projection("totals")
        group = group_of(cursors, projection)
        batches = await ready_batches(postgres)
        assert await asyncio.gather(*(group.commit(*b) for b in batches)) == [True] * PARTITIONS
        assert cursors.groups == [list(range(PARTITIONS))]
        # Again from the same positions: the cursors moved, nothing is written.
        assert await asyncio.gather(*(group.commit(*b) for b in batches)) == [False] * PARTITIONS
        assert len(cursors.groups) == 2
        # A runner given the group commits through it.
        runner = ProjectionRunner(APP, postgres.store, cursors, projection, 1, group=group)
        await tally.commit(postgres.store, APP, batches[1][3][0].event.entity_id, 2, tally.Added(4))
        assert await runner.step() == 1
        assert cursors.groups[2:] == [[1]]
        # A full batch (catching up) commits in a transaction of its own.
        full = ProjectionRunner(
            APP, postgres.store, cursors, projection, 1, group=group, options=RunnerOptions(2)
        )
        entity = batches[1][3][0].event.entity_id
        await tally.commit(postgres.store, APP, entity, 3, tally.Added(5), tally.Added(6))
        assert await full.step() == 2
        assert len(cursors.groups) == 3
    finally:
        await cursors.close()
    assert await read_model(postgres_dsn, namespace) == await fold_of_the_log(postgres, APP)


class Refusing(tally.Totals):
    """Totals that refuses the events of one entity (a handler's bug, say)."""

    def __init__(self, refused: uuid.UUID) -> None:
        super().__init__()
        self.refused = refused

    async def apply(self, event: Any, context: ProjectionContext) -> None:
        if context.entity_id == self.refused:
            raise ValueError("refused")
        await super().apply(event, context)


async def test_a_failing_batch_fails_alone_and_the_others_of_its_group_commit(
    postgres: Backend, postgres_dsn: str, namespace: str
) -> None:
    await create_read_model(postgres_dsn, namespace)
    entities = await one_entity_per_partition(postgres)
    refusing = Refusing(entities[2])
    app = tally.app(refusing)
    await postgres.cursors.ensure("totals", PARTITIONS)
    assert isinstance(postgres.cursors, PostgresCursors)
    group = group_of_app(postgres.cursors, app, refusing)
    batches = await ready_batches(postgres)
    outcomes = await asyncio.gather(*(group.commit(*b) for b in batches), return_exceptions=True)
    assert outcomes[:2] == [True, True]
    assert outcomes[3] is True
    assert isinstance(outcomes[2], ValueError)
    totals, applied = await read_model(postgres_dsn, namespace)
    assert totals == {entities[p]: 3 for p in (0, 1, 3)}
    assert applied == 6
    assert (await positions(postgres, "totals"))[2] == 0


async def test_a_runner_cancelled_while_its_batch_waits_withdraws_it(
    postgres: Backend, postgres_dsn: str, namespace: str
) -> None:
    await create_read_model(postgres_dsn, namespace)
    entities = await one_entity_per_partition(postgres)
    await postgres.cursors.ensure("totals", PARTITIONS)
    projection = APP.projection("totals")
    assert isinstance(postgres.cursors, PostgresCursors)
    group = group_of(postgres.cursors, projection)
    # Partition 0's batch waits for the group's task, which has not started yet.
    waiting = asyncio.create_task(group.commit(0, 0, 2, []))
    await asyncio.sleep(0)
    waiting.cancel()
    runner = ProjectionRunner(APP, postgres.store, postgres.cursors, projection, 1, group=group)
    assert await runner.step() == 2
    assert waiting.cancelled()
    assert await positions(postgres, "totals") == {0: 0, 1: 2, 2: 0, 3: 0}
    assert (await read_model(postgres_dsn, namespace))[0] == {entities[1]: 3}


async def test_a_projection_process_commits_its_live_batches_through_its_group(
    postgres: Backend, postgres_dsn: str, namespace: str
) -> None:
    await create_read_model(postgres_dsn, namespace)
    cursors = await counting(postgres_dsn, namespace)
    try:
        live = RunnerOptions(batch_size=500, min_interval=0.005, max_interval=0.05)
        process = ProjectionProcess(
            APP, postgres.store, cursors, SoloMembership(), partitions=PARTITIONS, options=live
        )
        async with running(process):
            await write_tallies(postgres, APP, entities=12, each=15)
            expected = await fold_of_the_log(postgres, APP)

            async def caught_up() -> bool:
                return await read_model(postgres_dsn, namespace) == expected

            await eventually(caught_up, timeout=10)
    finally:
        await cursors.close()
    assert cursors.groups  # every batch here was smaller than a full one


async def test_a_second_transaction_starts_while_the_first_is_in_flight(
    postgres: Backend, postgres_dsn: str, namespace: str
) -> None:
    await create_read_model(postgres_dsn, namespace)
    await one_entity_per_partition(postgres)
    cursors = await counting(postgres_dsn, namespace)
    gate = asyncio.Event()

    async def apply(chosen: list[Any], connection: Any) -> None:
        if any(logged.partition == 0 for logged in chosen):
            await gate.wait()  # partition 0's transaction stays open until let go
        await apply_events(APP, APP.projection("totals"), chosen, connection)

    try:
        await cursors.ensure("totals", PARTITIONS)
        group = BatchGroup(cursors, "totals", apply)
        batches = await ready_batches(postgres)
        first = asyncio.create_task(group.commit(*batches[0]))
        await asyncio.sleep(0.1)  # its transaction open, waiting at the gate
        assert await asyncio.wait_for(group.commit(*batches[1]), 10)
        assert not first.done()
        gate.set()
        assert await first
        assert cursors.groups == [[0], [1]]
    finally:
        await cursors.close()
    assert await positions(postgres, "totals") == {0: 2, 1: 2, 2: 0, 3: 0}


async def test_a_group_whose_runners_were_all_cancelled_commits_nothing(
    postgres: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "pachyderm.projections")
    cursors = await cursors_of(postgres, 2)
    group = BatchGroup(cursors, "p", apply_nothing)
    waiting = [asyncio.create_task(group.commit(p, 0, 1, [])) for p in range(2)]
    await asyncio.sleep(0)  # both waiting, the group's task not started yet
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    await asyncio.sleep(0.05)
    assert await positions(postgres) == {0: 0, 1: 0}
    assert not caplog.records  # no transaction tried, none failed
    # The group still serves the next batch.
    assert await asyncio.wait_for(group.commit(1, 0, 1, []), 10)
    assert await positions(postgres) == {0: 0, 1: 1}


async def apply_nothing(chosen: list[Any], connection: Any) -> None:
    """A read model with nothing to write."""
