"""A partition fires its timers along with its next batch of deliveries when busy (one
commit for both), and on its own when idle or when no batch comes soon; fires that
queued behind the partition go out together, in one commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest

from examples import reservation
from pachyderm import StoreUnavailableError
from pachyderm._wire import Request, command_message
from pachyderm.store import Change, CommitOutcome, SqliteEventStore
from pachyderm.transport import InProcessTransport, Topology
from pachyderm.worker import EffectPublisher, Engine, PartitionWorker
from pachyderm.worker._firing import fire_request

APP = reservation.app


class Counting(SqliteEventStore):
    """The embedded store, with the size of each commit written down."""

    commits: list[int]

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        self.commits.append(len(changes))
        return await super().commit(changes)


@pytest.fixture
async def setup() -> AsyncIterator[tuple[PartitionWorker, Counting]]:
    counting = await Counting.open(":memory:")
    counting.commits = []
    await counting.migrate()
    transport = InProcessTransport(Topology(partitions=1))
    await transport.start()
    engine = Engine(APP, counting)
    inbox = await transport.open_inbox(0, prefetch=10)
    effects = EffectPublisher(counting, transport)
    yield PartitionWorker(inbox, APP, engine, transport, effects), counting
    await transport.close()
    await counting.close()


async def due_fire(partition: PartitionWorker, seat: str) -> Request:
    """Hold ``seat`` for a moment, through the partition; the fire of its lapse, once due."""
    ref = reservation.Seat.ref(seat)
    message = command_message(APP, ref, reservation.Hold(seat, seconds=0.01))
    await partition.transport.publish_command(message)
    await partition.handle(await partition.inbox.take(1))
    await asyncio.sleep(0.02)
    [timer] = await partition.engine.store.entity_timers(ref.id)
    return fire_request(APP, timer, datetime.now(UTC))


async def test_an_idle_partition_fires_at_once(setup: tuple[PartitionWorker, Counting]) -> None:
    partition, counting = setup
    fire = await due_fire(partition, "idle")
    counting.commits.clear()
    [result] = await partition.fire([fire])
    assert (result.error, result.gone) == (None, False)
    assert counting.commits == [1]


async def test_a_busy_partition_takes_its_fires_along_with_its_next_batch(
    setup: tuple[PartitionWorker, Counting],
) -> None:
    partition, counting = setup
    fire = await due_fire(partition, "busy")
    other = command_message(APP, reservation.Seat.ref("other"), reservation.Hold("o"))
    await partition.transport.publish_command(other)
    counting.commits.clear()
    async with partition._handling:  # a batch is being applied
        firing = asyncio.create_task(partition.fire([fire]))
        await asyncio.sleep(0.005)
        await partition.handle(await partition.inbox.take(1))  # the next batch
    [result] = await firing
    assert (result.error, result.gone) == (None, False)
    assert counting.commits == [2]  # the fire and the delivery, in one commit
    history = await partition.engine.store.history(reservation.Seat.ref("busy").id)
    assert [event.name for event in history] == ["Held", "Lapsed"]


async def test_fires_no_batch_takes_run_on_their_own(
    setup: tuple[PartitionWorker, Counting],
) -> None:
    partition, counting = setup
    fire = await due_fire(partition, "alone")
    counting.commits.clear()
    async with partition._handling:
        firing = asyncio.create_task(partition.fire([fire]))
        await asyncio.sleep(0.1)  # longer than fires wait for a batch
        assert counting.commits == []
    [result] = await firing
    assert (result.error, result.gone) == (None, False)
    assert counting.commits == [1]


async def test_fires_queued_behind_the_partition_go_out_in_one_commit(
    setup: tuple[PartitionWorker, Counting],
) -> None:
    partition, counting = setup
    fires = [await due_fire(partition, seat) for seat in ("q1", "q2", "q3")]
    counting.commits.clear()
    async with partition._handling:  # a long batch: no next batch comes to take them
        firing = [asyncio.create_task(partition.fire([fire])) for fire in fires]
        await asyncio.sleep(0.1)  # longer than fires wait for a batch
        assert counting.commits == []
    results = await asyncio.gather(*firing)
    assert [(r.error, r.gone) for [r] in results] == [(None, False)] * 3
    assert counting.commits == [3]  # one commit for the three, not one each
    for seat in ("q1", "q2", "q3"):
        history = await partition.engine.store.history(reservation.Seat.ref(seat).id)
        assert [event.name for event in history] == ["Held", "Lapsed"]


class Failing(Counting):
    """Commits fail (the store is down)."""

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        raise StoreUnavailableError("down")


async def test_a_failed_commit_of_queued_fires_raises_for_one_and_leaves_the_rest_pending(
    setup: tuple[PartitionWorker, Counting],
) -> None:
    partition, _ = setup
    fires = [await due_fire(partition, seat) for seat in ("f1", "f2")]
    partition.engine.store.__class__ = Failing
    async with partition._handling:
        firing = [asyncio.create_task(partition.fire([fire])) for fire in fires]
        await asyncio.sleep(0.1)
    first, second = await asyncio.gather(*firing, return_exceptions=True)
    assert isinstance(first, StoreUnavailableError)  # the fire that ran the commit
    assert isinstance(second, list)
    assert second[0].gone  # not fired this time
    partition.engine.store.__class__ = Counting
    for seat in ("f1", "f2"):
        ref = reservation.Seat.ref(seat)
        assert len(await partition.engine.store.entity_timers(ref.id)) == 1  # still pending
