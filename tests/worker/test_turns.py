"""Entity turns: runs for disjoint entities go at once, a run for a held entity waits
for its holder, and a waiter cancelled meanwhile leaves nothing held."""

from __future__ import annotations

import asyncio
import uuid

from pachyderm._reference import Ref
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


async def _enter(turns: EntityTurns, refs: list[Ref]) -> None:
    async with turns.holding(refs):
        pass
