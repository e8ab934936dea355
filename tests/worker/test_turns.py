"""Entity turns: runs for disjoint entities go at once, a run for a held entity waits
for its holder, a waiter cancelled meanwhile leaves nothing held, and a worker's
partitions share them (a broker restart can move an entity to another partition
while its old queue still holds some of its commands)."""

from __future__ import annotations

import asyncio
import uuid

from examples import counter
from pachyderm import App
from pachyderm._reference import Ref
from pachyderm.fleet import SoloMembership
from pachyderm.store import EventStore
from pachyderm.transport import InProcessTransport, Topology
from pachyderm.worker import Worker
from pachyderm.worker._turns import EntityTurns

A, B, C = (Ref("seat", uuid.uuid4()) for _ in range(3))


async def test_disjoint_entities_do_not_wait() -> None:
    turns = EntityTurns()
    async with turns.holding([A, B]):
        await asyncio.wait_for(_enter(turns, [C]), 0.1)


async def test_a_held_entity_waits_for_its_holder_and_then_goes() -> None:
    turns = EntityTurns()
    order: list[str] = []

    async def second() -> None:
        async with turns.holding([B, C]):
            order.append("second")

    async with turns.holding([A, B]):
        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        order.append("first")
    await asyncio.wait_for(waiting, 0.1)
    assert order == ["first", "second"]


async def test_a_cancelled_waiter_holds_nothing() -> None:
    turns = EntityTurns()
    async with turns.holding([A]):
        waiting = asyncio.create_task(_enter(turns, [A, B]))
        await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await asyncio.wait_for(_enter(turns, [B]), 0.1)  # B was never taken
    await asyncio.wait_for(_enter(turns, [A, B]), 0.1)


async def test_a_workers_partitions_take_turns_on_one_entity(store: EventStore) -> None:
    transport = InProcessTransport(Topology(partitions=2))
    await transport.start()
    worker = Worker(App([counter.Counter]), store, transport, SoloMembership("w"))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), 5)
        first, second = (worker.partitions[p]._turns for p in (0, 1))
        async with first.holding([A]):
            waiting = asyncio.create_task(_enter(second, [A]))
            await asyncio.sleep(0.05)
            assert not waiting.done()  # partition 1 waits while partition 0 decides on A
        await asyncio.wait_for(waiting, 1)
    finally:
        stop.set()
        await running
        await transport.close()


async def _enter(turns: EntityTurns, refs: list[Ref]) -> None:
    async with turns.holding(refs):
        pass
