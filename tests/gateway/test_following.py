"""Following an entity live over real HTTP: Server-Sent Events from the gateway as commands
commit, resumed with Last-Event-ID without gaps or repeats; bounded streams whose slots a
disconnect gives back."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from pachyderm import Client
from pachyderm._embedded import EmbeddedFleet
from pachyderm.gateway import GatewayOptions, create_app
from pachyderm.gateway._auth import Guard
from pachyderm.gateway._problems import answer_http_error, answer_pachyderm_error
from pachyderm.gateway._routes import EntityEndpoints
from pachyderm.store import RecordedEvent

from .serving import APP, CALLER, JSON, Messages, problem, serving

COUNTER = "/entities/counter/key:followed"


async def increment(http: httpx.AsyncClient, amount: int) -> str:
    response = await http.post(
        f"{COUNTER}/commands/Increment", json={"amount": amount}, headers=CALLER | JSON
    )
    assert response.status_code == 200, response.text
    command_id: str = response.headers["Pachyderm-Command-Id"]
    return command_id


@asynccontextmanager
async def following(
    http: httpx.AsyncClient, path: str = COUNTER, **headers: str
) -> AsyncIterator[Messages]:
    async with http.stream("GET", f"{path}/events", headers=CALLER | headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Messages(response)


async def test_each_new_event_arrives_in_order_as_it_commits(http: httpx.AsyncClient) -> None:
    received = []
    async with following(http) as messages:
        for amount in (1, 2, 3):
            command_id = await increment(http, amount)
            # The event of a command arrives before the next is sent: live, not at the end.
            (event,) = await messages.events(1)
            assert (event["name"], event["data"], event["command_id"]) == (
                "Increased",
                {"amount": amount},
                command_id,
            )
            received.append(event["version"])
    assert received == [1, 2, 3]


async def test_a_stream_starts_at_from(http: httpx.AsyncClient) -> None:
    for amount in (1, 2, 3):
        await increment(http, amount)
    async with http.stream("GET", f"{COUNTER}/events?from=2", headers=CALLER) as response:
        events = await Messages(response).events(2)
    assert [(e["version"], e["data"]["amount"]) for e in events] == [(2, 2), (3, 3)]


async def test_a_reconnect_resumes_after_last_event_id(http: httpx.AsyncClient) -> None:
    for amount in range(1, 4):
        await increment(http, amount)
    async with following(http) as messages:
        first = await messages.events(2)
    for amount in range(4, 7):  # committed while no one follows
        await increment(http, amount)
    last_id = str(first[-1]["version"])
    async with following(http, **{"Last-Event-ID": last_id}) as messages:
        rest = await messages.events(4)
        await increment(http, 7)
        rest += await messages.events(1)
    versions = [e["version"] for e in first + rest]
    assert versions == list(range(1, 8))  # no gap, no repeat
    assert [e["data"]["amount"] for e in first + rest] == list(range(1, 8))


async def test_bad_starts_and_other_types_are_refused(http: httpx.AsyncClient) -> None:
    await increment(http, 1)
    problem(await http.get(f"{COUNTER}/events?from=0", headers=CALLER), 400)
    bad_id = CALLER | {"Last-Event-ID": "x"}
    problem(await http.get(f"{COUNTER}/events", headers=bad_id), 400)
    counter_id = (await http.get(COUNTER, headers=CALLER)).json()["id"]
    # The counter's id, as an account's: the id is another type's.
    problem(await http.get(f"/entities/account/{counter_id}/events", headers=CALLER), 404)
    problem(await http.get("/entities/nope/key:a/events", headers=CALLER), 404)


@asynccontextmanager
async def bounded(fleet: EmbeddedFleet, max_streams: int) -> AsyncIterator[httpx.AsyncClient]:
    """The entity routes alone, with at most ``max_streams`` open streams."""
    client = Client(APP, fleet.transport)
    await client.start()
    endpoints = EntityEndpoints(client, fleet.store, APP, 1024, max_streams=max_streams)
    asgi = Starlette(
        routes=endpoints.routes(Guard(None)),
        exception_handlers={
            HTTPException: answer_http_error,
            Exception: answer_pachyderm_error,
        },
    )
    async with serving(asgi) as http:
        yield http


async def test_streams_are_bounded_and_a_disconnect_frees_a_slot(fleet: EmbeddedFleet) -> None:
    async with bounded(fleet, 1) as http:
        await increment(http, 1)
        async with following(http) as messages:
            await messages.events(1)
            refused = await http.get(f"{COUNTER}/events", headers=CALLER)
            assert problem(refused, 503)["type"] == "urn:pachyderm:problem:unavailable"
            assert refused.headers["Retry-After"] == "1"
        # The client went away: its stream ends and its slot is free again, promptly.
        async with asyncio.timeout(10):  # far more than the slowest poll (1 s)
            while True:
                async with http.stream("GET", f"{COUNTER}/events", headers=CALLER) as again:
                    if again.status_code == 200:
                        (event,) = await Messages(again).events(1)
                        assert event["version"] == 1
                        break
                await asyncio.sleep(0.05)


async def test_an_idle_stream_backs_off_and_an_event_wakes_it(
    fleet: EmbeddedFleet, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While idle, reads back off to one a second (no busy loop); an event still arrives
    within a second."""
    reads: list[float] = []
    history = fleet.store.history

    async def counted(*args: Any, **kwargs: Any) -> list[RecordedEvent]:
        reads.append(asyncio.get_running_loop().time())
        return await history(*args, **kwargs)

    monkeypatch.setattr(fleet.store, "history", counted)
    async with following(http) as messages:
        await asyncio.sleep(3.5)
        # 50, 100, 200, 400, 800, then 1000 ms apart: eight reads in 3.5 s, not thousands.
        assert 6 <= len(reads) <= 10, len(reads)
        gaps = [b - a for a, b in itertools.pairwise(reads)]
        assert gaps[0] < 0.2
        assert max(gaps) >= 0.95
        sent = asyncio.get_running_loop().time()
        await increment(http, 5)
        (event,) = await messages.events(1)
        assert event["data"] == {"amount": 5}
        assert asyncio.get_running_loop().time() - sent < 1.5


async def test_create_app_bounds_streams_by_the_option(fleet: EmbeddedFleet) -> None:
    client = Client(APP, fleet.transport)
    await client.start()
    asgi = create_app(client, fleet.store, GatewayOptions(tokens=None, max_streams=1), app=APP)
    async with serving(asgi) as http:
        await increment(http, 1)
        async with following(http) as messages:
            await messages.events(1)
            problem(await http.get(f"{COUNTER}/events"), 503)
