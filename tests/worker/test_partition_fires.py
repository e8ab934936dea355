"""A partition fires its timers beside its batches, not behind them: a fire waits for
no batch in flight, only for a run that holds one of its own entities, and a batch
waits for the fire of one of its entities; an entity is never in two runs at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest

from examples import reservation
from pachyderm import StoreUnavailableError
from pachyderm._reference import Ref
from pachyderm._wire import Request, command_message
from pachyderm.store import Change, CommitOutcome, SqliteEventStore
from pachyderm.transport import InProcessTransport, Topology
from pachyderm.worker import EffectPublisher, Engine, PartitionWorker
from pachyderm.worker._engine import Done
from pachyderm.worker._firing import fire_request

APP = reservation.app


class Gated(SqliteEventStore):
    """The embedded store, with the size of each commit written down; a commit waits
    while ``gate`` is closed."""

    commits: list[int]
    gate: asyncio.Event

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        self.commits.append(len(changes))
        await self.gate.wait()
        return await super().commit(changes)


class Overlaps(Engine):
    """The engine, noting the entities two of its runs held at once (must stay empty)."""

    def __init__(self, store: Gated) -> None:
        super().__init__(APP, store)
        self.running: list[set[Ref]] = []
        self.overlaps: list[set[Ref]] = []

    async def run(
        self, requests: Sequence[Request], *, partition: int = 0, **options: object
    ) -> tuple[list[Done], list[Change]]:
        refs = {request.ref for request in requests}
        self.overlaps.extend(refs & other for other in self.running if refs & other)
        self.running.append(refs)
        try:
            return await super().run(requests, partition=partition, **options)  # type: ignore[arg-type]
        finally:
            self.running.remove(refs)


@pytest.fixture
async def setup() -> AsyncIterator[tuple[PartitionWorker, Gated]]:
    store = await Gated.open(":memory:")
    store.commits, store.gate = [], asyncio.Event()
    store.gate.set()
    await store.migrate()
    transport = InProcessTransport(Topology(partitions=1))
    await transport.start()
    inbox = await transport.open_inbox(0, prefetch=10)
    effects = EffectPublisher(store, transport)
    yield PartitionWorker(inbox, APP, Overlaps(store), transport, effects), store
    await transport.close()
    await store.close()


async def due_fire(partition: PartitionWorker, seat: str) -> Request:
    """Hold ``seat`` for a moment, through the partition; the fire of its lapse, once due."""
    ref = reservation.Seat.ref(seat)
    await send(partition, seat, reservation.Hold(seat, seconds=0.01))
    await partition.handle(await partition.inbox.take(1))
    await asyncio.sleep(0.02)
    [timer] = await partition.engine.store.entity_timers(ref.id)
    return fire_request(APP, timer, datetime.now(UTC))


async def send(partition: PartitionWorker, seat: str, command: object) -> None:
    message = command_message(APP, reservation.Seat.ref(seat), command)
    await partition.transport.publish_command(message)


async def applying(partition: PartitionWorker, count: int) -> None:
    """Take and apply a batch of ``count`` deliveries, as the partition's loop does."""
    async with partition._handling:
        await partition.handle(await partition.inbox.take(count))


async def history(partition: PartitionWorker, seat: str) -> list[str]:
    events = await partition.engine.store.history(reservation.Seat.ref(seat).id)
    return [event.name for event in events]


async def test_an_idle_partition_fires_at_once(setup: tuple[PartitionWorker, Gated]) -> None:
    partition, store = setup
    fire = await due_fire(partition, "idle")
    store.commits.clear()
    [result] = await partition.fire([fire])
    assert (result.error, result.gone) == (None, False)
    assert store.commits == [1]


async def test_a_fire_does_not_wait_for_the_batch_in_flight(
    setup: tuple[PartitionWorker, Gated], monkeypatch: pytest.MonkeyPatch
) -> None:
    partition, _ = setup
    fire = await due_fire(partition, "beside")
    await send(partition, "other", reservation.Hold("o"))
    replying = asyncio.Event()

    async def hanging(replies: object) -> None:
        await replying.wait()

    # The batch in flight hangs after its commit, holding the partition.
    monkeypatch.setattr(partition.transport, "publish_replies", hanging)
    batch = asyncio.create_task(applying(partition, 1))
    await asyncio.sleep(0.02)
    assert partition._handling.locked()
    [result] = await asyncio.wait_for(partition.fire([fire]), 1.0)
    assert (result.error, result.gone) == (None, False)
    assert await history(partition, "beside") == ["Held", "Lapsed"]
    assert not batch.done()
    replying.set()
    await batch


async def test_a_fire_waits_for_the_batch_deciding_on_its_entity_and_no_longer(
    setup: tuple[PartitionWorker, Gated],
) -> None:
    partition, store = setup
    fire = await due_fire(partition, "same")
    await send(partition, "same", reservation.Confirm("same"))
    store.gate.clear()
    batch = asyncio.create_task(applying(partition, 1))
    await asyncio.sleep(0.02)  # the batch holds the seat, its commit hanging
    firing = asyncio.create_task(partition.fire([fire]))
    await asyncio.sleep(0.05)
    assert not firing.done()
    assert len(store.commits) == 2  # the Hold's and the batch's: the fire waits its turn
    store.gate.set()
    await batch
    [result] = await firing
    assert result.error is None
    # Confirmed first: the lapse fires on the sold seat, and changes nothing.
    assert await history(partition, "same") == ["Held", "Confirmed"]
    assert isinstance(partition.engine, Overlaps)
    assert partition.engine.overlaps == []


async def test_a_batch_waits_for_the_fire_of_one_of_its_entities(
    setup: tuple[PartitionWorker, Gated],
) -> None:
    partition, store = setup
    fire = await due_fire(partition, "late")
    await send(partition, "late", reservation.Confirm("late"))
    await send(partition, "free", reservation.Hold("f"))
    store.gate.clear()
    firing = asyncio.create_task(partition.fire([fire]))
    await asyncio.sleep(0.02)  # the fire holds the seat, its commit hanging
    batch = asyncio.create_task(applying(partition, 2))
    await asyncio.sleep(0.05)
    assert not batch.done()
    store.gate.set()
    await asyncio.gather(firing, batch)
    # Lapsed first: the confirmation comes too late, and is refused.
    assert await history(partition, "late") == ["Held", "Lapsed"]
    assert await history(partition, "free") == ["Held"]
    assert isinstance(partition.engine, Overlaps)
    assert partition.engine.overlaps == []


class Failing(Gated):
    """Commits fail (the store is down)."""

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        raise StoreUnavailableError("down")


async def test_a_failed_commit_raises_for_the_fire_and_leaves_its_timer_pending(
    setup: tuple[PartitionWorker, Gated],
) -> None:
    partition, _ = setup
    fire = await due_fire(partition, "down")
    partition.engine.store.__class__ = Failing
    with pytest.raises(StoreUnavailableError):
        await partition.fire([fire])
    partition.engine.store.__class__ = Gated
    ref = reservation.Seat.ref("down")
    assert len(await partition.engine.store.entity_timers(ref.id)) == 1  # still pending
    [result] = await partition.fire([fire])  # and fires when tried again
    assert (result.error, result.gone) == (None, False)


async def test_a_stopping_partition_fires_nothing(
    setup: tuple[PartitionWorker, Gated],
) -> None:
    partition, store = setup
    fire = await due_fire(partition, "stop")
    store.commits.clear()
    partition._stopping = True
    [result] = await partition.fire([fire])
    assert result.gone
    assert store.commits == []
    ref = reservation.Seat.ref("stop")
    assert len(await partition.engine.store.entity_timers(ref.id)) == 1  # for the next owner
