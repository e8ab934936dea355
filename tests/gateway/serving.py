"""A gateway served over real HTTP (uvicorn on a free loopback port), and the app the
tests call through it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.types import ASGIApp

from examples import bank, counter
from pachyderm import App, Entity, HandleResult
from pachyderm.gateway import Tokens, listen, serve

TOKENS = Tokens.parse("caller-token=call+read,reader-token=read")
CALLER = {"Authorization": "Bearer caller-token"}
READER = {"Authorization": "Bearer reader-token"}
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Explode:
    pass


@dataclass(frozen=True)
class Exploded:
    pass


@dataclass(frozen=True)
class Peek:
    pass


class Fragile(Entity[dict[str, Any]]):
    """An entity whose code raises, on commands and queries (its state too): the gateway
    must answer 500 without telling why."""

    commands = (Explode,)
    events = (Exploded,)
    queries = (Peek,)

    def init(self) -> dict[str, Any]:
        return {}

    def handle(self, message: Any, state: dict[str, Any]) -> HandleResult:
        raise RuntimeError("the secret is 42")

    def update(self, event: Any, state: dict[str, Any]) -> dict[str, Any]:
        return state

    def query(self, query: Any, state: dict[str, Any]) -> Any:
        raise RuntimeError("the secret is 42")


@dataclass(frozen=True)
class Add:
    amount: int


@dataclass(frozen=True)
class Added:
    amount: int


@dataclass(frozen=True)
class Exceeds:
    limit: int


class Meter(Entity[int]):
    """An entity with a named query."""

    commands = (Add,)
    events = (Added,)
    queries = (Exceeds,)

    def init(self) -> int:
        return 0

    def handle(self, message: Any, state: int) -> HandleResult:
        return [Added(message.amount)]

    def update(self, event: Any, state: int) -> int:
        return state + int(event.amount)

    def query(self, query: Any, state: int) -> Any:
        return state > query.limit if isinstance(query, Exceeds) else state


APP = App([counter.Counter, bank.Account, Fragile, Meter])


@asynccontextmanager
async def serving(asgi: ASGIApp, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """``asgi`` on 127.0.0.1 (a free port) and an HTTP client for it; stopped on exit."""
    listener = listen("127.0.0.1", 0)
    port = listener.getsockname()[1]
    stop = asyncio.Event()
    server = asyncio.create_task(serve(asgi, listener, stop, grace=1))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", **options) as http:
            yield http
    finally:
        stop.set()
        await server


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem document of ``response``, checked for status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert document["status"] == status
    assert isinstance(document["title"], str)
    assert isinstance(document["detail"], str)
    assert document["type"] == "about:blank" or document["type"].startswith("urn:pachyderm:")
    return document


WAIT = 10.0  # seconds for an event stream's next message: far more than its slowest poll


class Messages:
    """The Server-Sent Events of a streamed response, one message at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        async with asyncio.timeout(WAIT):
            async for line in self.lines:
                if not line:
                    if "data" in fields:
                        return fields
                    fields = {}  # retry: or a comment: no event
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        raise AssertionError("the stream ended")

    async def events(self, count: int) -> list[dict[str, Any]]:
        received = []
        for _ in range(count):
            message = await self.next()
            data = json.loads(message["data"])
            assert message["id"] == str(data["version"])
            assert message["event"] == data["name"]
            received.append(data)
        return received
