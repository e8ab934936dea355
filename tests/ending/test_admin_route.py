"""The gateway's admin route on an embedded fleet: erasing through HTTP with the admin
token, audited; the entity then refuses commands through the client and the gateway;
an ended entity answers 410 to commands and its final state to reads."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from pachyderm import EntityErasedError, embedded
from pachyderm._embedded import EmbeddedFleet
from pachyderm.gateway import GatewayOptions, Tokens, create_app

from ..gateway.serving import serving
from .membership import APP, Close, Join, Membership, Visit

OPTIONS = GatewayOptions(tokens=Tokens.parse("user=call+read"), admin_token="admin-secret")
USER = {"Authorization": "Bearer user", "Content-Type": "application/json"}


@pytest.fixture
async def fleet() -> AsyncIterator[EmbeddedFleet]:
    async with embedded(APP) as started:
        yield started


@pytest.fixture
async def http(fleet: EmbeddedFleet) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(fleet.client, fleet.store, OPTIONS, app=APP)) as client:
        yield client


async def test_erasing_through_the_admin_route(
    fleet: EmbeddedFleet, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    ann = Membership.ref("ann")
    await fleet.client.call(ann, Join(name="Ann Secret"))
    path = f"/admin/entities/membership/{ann.id}"
    assert (await http.delete(path, headers=USER)).status_code == 401  # not the admin token
    with caplog.at_level(logging.WARNING, logger="pachyderm.audit"):
        answer = await http.delete(path, headers={"Authorization": "Bearer admin-secret"})
    assert answer.status_code == 200
    assert answer.json() | {"entity_id": ""} == {
        "entity_id": "",
        "entity_type": "membership",
        "version": 1,
        "events": 1,
        "snapshots": 0,
        "commands": 1,
        "timers": 0,
        "log_rows": 1,
        "effects": 0,
        "quarantined": 0,
    }
    [audit] = [r for r in caplog.records if r.name == "pachyderm.audit"]
    assert audit.__dict__["actor"].startswith("gateway admin token from ")
    assert "Ann Secret" not in audit.getMessage()
    with pytest.raises(EntityErasedError):
        await fleet.client.call(ann, Visit())
    refused = await http.post(
        f"/entities/membership/{ann.id}/commands/Visit", json={}, headers=USER
    )
    assert (refused.status_code, refused.json()["type"]) == (410, "urn:pachyderm:problem:erased")


async def test_an_ended_entity_answers_410_to_commands_and_its_state_to_reads(
    fleet: EmbeddedFleet, http: httpx.AsyncClient
) -> None:
    bob = Membership.ref("bob")
    await fleet.client.call(bob, Join(name="bob"))
    await fleet.client.call(bob, Close(reason="done"))
    base = f"/entities/membership/{bob.id}"
    refused = await http.post(f"{base}/commands/Visit", json={}, headers=USER)
    assert (refused.status_code, refused.json()["type"]) == (410, "urn:pachyderm:problem:ended")
    state = await http.get(base, headers=USER)
    assert (state.status_code, state.json()["state"]["closed"]) == (200, "done")
