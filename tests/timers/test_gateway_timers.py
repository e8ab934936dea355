"""``GET /entities/{type}/{id}/timers`` over real HTTP: an entity's pending timers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest

from examples import reservation
from pachyderm._embedded import EmbeddedFleet, embedded
from pachyderm.gateway import GatewayOptions, create_app

from ..gateway.serving import serving


@pytest.fixture
async def http() -> AsyncIterator[tuple[EmbeddedFleet, httpx.AsyncClient]]:
    async with embedded(reservation.app) as fleet:
        app = create_app(
            fleet.client, fleet.store, GatewayOptions(tokens=None), app=reservation.app
        )
        async with serving(app) as client:
            yield fleet, client


async def test_pending_timers_are_listed(http: tuple[EmbeddedFleet, httpx.AsyncClient]) -> None:
    _, client = http
    hold = await client.post(
        "/entities/seat/key:4D/commands/Hold", json={"customer": "dee", "seconds": 600}
    )
    assert hold.status_code == 200, hold.text
    answer = await client.get("/entities/seat/key:4D/timers")
    assert answer.status_code == 200
    body = answer.json()
    assert body["type"] == "seat"
    [timer] = body["timers"]
    assert (timer["key"], timer["command"], timer["data"]) == ("hold", "Lapse", {"customer": "dee"})
    assert (timer["to"], timer["every_seconds"], timer["attempts"]) == (None, None, 0)
    assert datetime.fromisoformat(timer["due_at"]) == datetime.fromisoformat(timer["next_try_at"])
    confirm = await client.post("/entities/seat/key:4D/commands/Confirm", json={"customer": "dee"})
    assert confirm.status_code == 200
    assert (await client.get("/entities/seat/key:4D/timers")).json()["timers"] == []


async def test_timers_of_an_id_of_another_type_are_refused(
    http: tuple[EmbeddedFleet, httpx.AsyncClient],
) -> None:
    _, client = http
    await client.post("/entities/seat/key:5E/commands/Hold", json={"customer": "eve"})
    seat_id = reservation.Seat.ref("5E").id
    answer = await client.get(f"/entities/subscription/{seat_id}/timers")
    assert answer.status_code == 404
    assert (await client.get("/entities/nope/key:x/timers")).status_code == 404
