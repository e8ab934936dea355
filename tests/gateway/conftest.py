"""An embedded fleet serving the test app, and its gateway over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from pachyderm import App, Client
from pachyderm._embedded import EmbeddedFleet, embedded
from pachyderm.gateway import GatewayOptions, create_app

from .serving import APP, TOKENS, serving


@pytest.fixture
async def fleet() -> AsyncIterator[EmbeddedFleet]:
    async with embedded(APP) as started:
        yield started


@asynccontextmanager
async def gateway(fleet: EmbeddedFleet, app: App | None) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway of ``fleet`` with authentication on; without ``app``, as `pachyderm
    gateway` runs by default: names travel to the workers unchecked."""
    client = Client(app, fleet.transport)
    await client.start()
    asgi = create_app(client, fleet.store, GatewayOptions(tokens=TOKENS), app=app)
    async with serving(asgi) as http:
        yield http


@pytest.fixture
async def http(fleet: EmbeddedFleet) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway(fleet, APP) as client:
        yield client


@pytest.fixture
async def bare(fleet: EmbeddedFleet) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway(fleet, None) as client:
        yield client


@pytest.fixture(params=[APP, None], ids=["with-app", "without-app"])
async def either(
    request: pytest.FixtureRequest, fleet: EmbeddedFleet
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway(fleet, request.param) as client:
        yield client
