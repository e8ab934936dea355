"""The client: the same answer whatever the way of calling, a close that ends every
call, and ``async with Client.connect(settings, app)`` against worker processes."""

from __future__ import annotations

import asyncio

import pytest

from examples import counter
from pachyderm import (
    Answer,
    App,
    CallTimeoutError,
    Client,
    EmbeddedFleet,
    PachydermError,
)
from pachyderm.testing import ProcessFleet
from pachyderm.transport import InProcessTransport, Topology

COUNTER = counter.Counter.ref("c")


@pytest.fixture
def pachyderm_app() -> App:
    return counter.app


@pytest.fixture
def pachyderm_app_spec() -> str:
    return "examples.counter:app"


async def test_every_way_of_calling_answers_the_reply(pachyderm_fleet: EmbeddedFleet) -> None:
    client = pachyderm_fleet.client
    assert await client.call(COUNTER, counter.Increment(amount=2)) == {"count": 2}
    assert await client.call_named(COUNTER, "Increment", {"amount": 3}) == {"count": 5}
    # With the version, for whoever shows it (the gateway, `pachyderm call`).
    assert await client.request(COUNTER, "Increment", {"amount": 1}) == Answer(3, {"count": 6})
    assert await client.query(COUNTER) == {"count": 6}
    assert await client.call_named(COUNTER, "", None, kind="query") == {"count": 6}
    version, state = await client.request(COUNTER, "", None, kind="query")
    assert (version, state) == (3, {"count": 6})


async def test_a_closed_client_ends_the_calls_waiting_and_takes_no_more() -> None:
    transport = InProcessTransport(Topology(partitions=1))
    await transport.start()
    client = Client(counter.app, transport)
    await client.start()
    # No worker consumes the partition: the call waits until the client closes.
    waiting = asyncio.create_task(client.call(COUNTER, counter.Increment(), timeout=30))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(waiting), 0.2)
    await client.close()
    with pytest.raises(CallTimeoutError, match="closed before the reply"):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(PachydermError, match="not started"):
        await client.call(COUNTER, counter.Increment())


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_connect_opens_a_client_of_the_fleet_and_closes_it(
    pachyderm_process_fleet: ProcessFleet,
) -> None:
    settings = pachyderm_process_fleet.settings()
    async with Client.connect(settings, counter.app) as client:
        assert await client.call(COUNTER, counter.Increment(amount=4)) == {"count": 4}
        assert await client.request(COUNTER, "Increment", {"amount": 1}) == (2, {"count": 5})
    assert client.timeout == settings.call_timeout
    with pytest.raises(PachydermError, match="not started"):
        await client.call(COUNTER, counter.Increment())
    # The app by name; or none, for calls by name only.
    async with Client.connect(settings, "examples.counter:app") as client:
        assert await client.query(COUNTER) == {"count": 5}
    async with Client.connect(settings) as client:
        assert await client.call_named(COUNTER, "Increment", {}) == {"count": 6}
        with pytest.raises(PachydermError, match="need the client to know the App"):
            await client.call(COUNTER, counter.Increment())
