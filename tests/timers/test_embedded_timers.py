"""Timers on the embedded fleet (SQLite, the in-process transport): the same worker code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from examples import reservation
from pachyderm._embedded import EmbeddedFleet, embedded

from ..waiting import eventually


@pytest.fixture
async def fleet() -> AsyncIterator[EmbeddedFleet]:
    async with embedded(reservation.app) as running:
        yield running


async def test_a_hold_lapses_after_its_delay(fleet: EmbeddedFleet) -> None:
    seat = reservation.Seat.ref("1A")
    await fleet.client.call(seat, reservation.Hold("ann", seconds=0.2))
    [timer] = await fleet.store.entity_timers(seat.id)
    assert timer.key == "hold"

    async def lapsed() -> bool:
        return bool((await fleet.client.query(seat))["status"] == "free")

    await eventually(lapsed, timeout=3)
    assert await fleet.store.entity_timers(seat.id) == []
    history = await fleet.store.history(seat.id)
    fired = history[-1]
    assert fired.name == "Lapsed"
    assert fired.recorded_at >= timer.due_at  # never early


async def test_a_confirmed_hold_never_lapses(fleet: EmbeddedFleet) -> None:
    seat = reservation.Seat.ref("1B")
    await fleet.client.call(seat, reservation.Hold("bob", seconds=0.3))
    await fleet.client.call(seat, reservation.Confirm("bob"))
    assert await fleet.store.entity_timers(seat.id) == []
    await asyncio.sleep(0.5)
    state = await fleet.client.query(seat)
    assert state == {"status": "sold", "customer": "bob"}


async def test_a_subscription_renews_on_its_grid(fleet: EmbeddedFleet) -> None:
    sub = reservation.Subscription.ref("s1")
    await fleet.client.call(sub, reservation.Subscribe(every_seconds=0.1))

    async def renewed_thrice() -> bool:
        return bool((await fleet.client.query(sub))["renewals"] >= 3)

    await eventually(renewed_thrice, timeout=5)
    await fleet.client.call(sub, reservation.Unsubscribe())
    assert await fleet.store.entity_timers(sub.id) == []
    renewals = (await fleet.client.query(sub))["renewals"]
    await asyncio.sleep(0.3)
    assert (await fleet.client.query(sub))["renewals"] == renewals
