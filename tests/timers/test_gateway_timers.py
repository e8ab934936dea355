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


async def test_a_held_timer_shows_held_and_an_operator_releases_it_over_http() -> None:
    """As a worker holds a poison timer (pachyderm.worker._timer_poison), then the admin
    route an operator calls: its tries start over, its next try is its due time."""
    async with embedded(reservation.app) as fleet:
        options = GatewayOptions(tokens=None, admin_token="root")
        app = create_app(fleet.client, fleet.store, options, app=reservation.app)
        async with serving(app) as client:
            hold = await client.post(
                "/entities/seat/key:6F/commands/Hold", json={"customer": "fay", "seconds": 600}
            )
            assert hold.status_code == 200, hold.text
            seat = reservation.Seat.ref("6F")
            await fleet.store.postpone_timers({(seat.id, "hold"): 1.0})
            await fleet.store.hold_timers([(seat.id, "hold")])
            [timer] = (await client.get("/entities/seat/key:6F/timers")).json()["timers"]
            assert (timer["held"], timer["attempts"]) == (True, 1)
            release = "/admin/entities/seat/key:6F/timers/hold/release"
            assert (await client.post(release)).status_code == 401  # the admin token only
            released = await client.post(release, headers={"Authorization": "Bearer root"})
            assert released.status_code == 200, released.text
            assert released.json() == {"entity": str(seat), "timer": "hold", "released": True}
            [timer] = (await client.get("/entities/seat/key:6F/timers")).json()["timers"]
            assert (timer["held"], timer["attempts"]) == (False, 0)
            assert timer["next_try_at"] == timer["due_at"]
