"""Every answer validates against what the OpenAPI document declares for its route and
status: the content type, and the schema generated from the model the route answers with.
Every answer the document declares is exercised here, so a status added to the document
needs a request that gets it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema
import pytest
from pydantic import ValidationError

from pachyderm import Client, Ref, StoreUnavailableError
from pachyderm._embedded import EmbeddedFleet
from pachyderm._stored_messages import encode_message
from pachyderm.gateway import GatewayOptions, Tokens, create_app
from pachyderm.gateway._openapi import openapi_document
from pachyderm.gateway._problems import Problem
from pachyderm.store import (
    Change,
    Erasure,
    EventStore,
    HasQuarantine,
    LoadedEntity,
    Quarantined,
    RecordedEvent,
    SqliteEventStore,
    StoredTimer,
    TimerWrite,
)
from pachyderm.store._records import ListedEntity
from pachyderm.transport import InProcessTransport, Message, Topology

from .serving import APP, serving

# A token for each right alone, so that every route can be refused with 403.
TOKENS = Tokens.parse("both=call+read,caller=call,reader=read")
MAX_BODY = 256

ENTITY = "/entities/{type}/{id}"
COMMANDS, QUERIES = f"{ENTITY}/commands/{{command}}", f"{ENTITY}/queries/{{query}}"
HISTORY = f"{ENTITY}/history"
TIMERS = f"{ENTITY}/timers"
ENTITIES, EVENTS = "/entities/{type}", f"{ENTITY}/events"
ALICE, METER = "/entities/account/key:alice", "/entities/meter/key:m"
# Erased before the requests (see serving_fleet): every call to them is answered 410.
GONE_ACCOUNT, GONE_METER = "/entities/account/key:gone", "/entities/meter/key:gone"
ADMIN = "/admin/entities/{type}/{id}"
RELEASE = f"{ADMIN}/timers/{{key}}/release"
# Its timer "lapse" is held before the requests.
HELD = "/admin/entities/account/key:held/timers"
QUARANTINE = "/admin/quarantine"
QUARANTINED = f"{QUARANTINE}/{{entity_id}}/{{command_id}}"
# Its commands c-show, c-resume and c-skip are quarantined before the requests.
POISONED = f"{QUARANTINE}/{Ref.from_key('account', 'poisoned').id}"
FRAGILE, NOPE = "/entities/fragile/key:f", "/entities/nope/key:a"
TOO_LARGE = b'{"padding": "' + b"x" * MAX_BODY + b'"}'


@dataclass(frozen=True)
class Exchange:
    """A request to ``path`` (of the route ``template``) and the status it must get."""

    status: int
    method: str
    template: str
    path: str
    body: bytes | None = None
    token: str | None = "both"  # "root": the admin token
    content_type: str = "application/json"
    stream: bool = False  # an answer that does not end: its head is what is checked

    async def send(self, http: httpx.AsyncClient) -> httpx.Response:
        headers = {"Content-Type": self.content_type}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        request = http.build_request(self.method, self.path, content=self.body, headers=headers)
        response = await http.send(request, stream=self.stream)
        if self.stream and response.status_code == self.status:
            await response.aclose()
        else:
            await response.aread()
        assert response.status_code == self.status, (self, response.text)
        return response


def post(status: int, template: str, path: str, body: bytes = b"{}", **kw: Any) -> Exchange:
    return Exchange(status, "POST", template, path, body, **kw)


def get(status: int, template: str, path: str, **kw: Any) -> Exchange:
    return Exchange(status, "GET", template, path, **kw)


def delete(status: int, path: str, token: str | None = "root") -> Exchange:
    return Exchange(status, "DELETE", ADMIN, path, token=token)


def release(status: int, path: str, token: str | None = "root") -> Exchange:
    return Exchange(status, "POST", RELEASE, path, b"", token=token)


def admin(status: int, method: str, path: str, token: str | None = "root") -> Exchange:
    """A request to a quarantine admin route (``path`` under ``POISONED`` unless it is
    the list)."""
    template = QUARANTINE if path == QUARANTINE else QUARANTINED
    if path.endswith(("/resume", "/skip")):
        template = f"{QUARANTINED}/{path.rsplit('/', 1)[1]}"
    return Exchange(status, method, template, path, b"" if method == "POST" else None, token=token)


def quarantine_exchanges() -> list[Exchange]:
    """Every answer of the quarantine's admin routes with the admin token set."""
    exchanges = [
        admin(200, "GET", QUARANTINE),
        admin(401, "GET", QUARANTINE, token="both"),  # not the admin token
        admin(200, "GET", f"{POISONED}/c-show"),
        admin(400, "GET", f"{QUARANTINE}/12345/c-show"),
        admin(401, "GET", f"{POISONED}/c-show", token=None),
        admin(404, "GET", f"{POISONED}/nope"),
    ]
    for decision in ("resume", "skip"):
        exchanges += [
            admin(200, "POST", f"{POISONED}/c-{decision}/{decision}"),
            admin(404, "POST", f"{POISONED}/c-{decision}/{decision}"),  # decided already
            admin(400, "POST", f"{QUARANTINE}/12345/c/{decision}"),
            admin(401, "POST", f"{POISONED}/c-{decision}/{decision}", token=None),
        ]
    return exchanges


def refusals(template: str, path: str, body: bytes | None, right_lacking: str) -> list[Exchange]:
    """401 without a token; 403 with a token lacking the route's right."""
    method = "GET" if body is None else "POST"
    return [
        Exchange(401, method, template, path, body, token=None),
        Exchange(403, method, template, path, body, token=right_lacking),
    ]


def failures(status: int) -> list[Exchange]:
    """``status`` from the three routes that call an entity."""
    return [
        post(status, COMMANDS, f"{ALICE}/commands/Open", b'{"owner": "A"}'),
        post(status, QUERIES, f"{METER}/queries/Exceeds", b'{"limit": 0}'),
        get(status, ENTITY, ALICE),
    ]


# Against the embedded fleet: everything but an unavailable or silent broker or store.
SERVING = [
    post(200, COMMANDS, f"{ALICE}/commands/Open", b'{"owner": "A"}'),
    post(409, COMMANDS, f"{ALICE}/commands/Open", b'{"owner": "A"}'),
    post(422, COMMANDS, f"{ALICE}/commands/Deposit", b'{"amount": -1}'),
    post(400, COMMANDS, f"{ALICE}/commands/Open", b"[]"),
    *refusals(COMMANDS, f"{ALICE}/commands/Open", b"{}", "reader"),
    post(404, COMMANDS, f"{NOPE}/commands/Open"),
    post(413, COMMANDS, f"{ALICE}/commands/Open", TOO_LARGE),
    post(415, COMMANDS, f"{ALICE}/commands/Open", content_type="text/plain"),
    post(500, COMMANDS, f"{FRAGILE}/commands/Explode"),
    post(200, COMMANDS, f"{METER}/commands/Add", b'{"amount": 1}'),
    post(200, COMMANDS, f"{METER}/commands/Add", b'{"amount": 2}'),
    post(200, QUERIES, f"{METER}/queries/Exceeds", b'{"limit": 0}'),
    post(400, QUERIES, f"{METER}/queries/Exceeds", b"[]"),
    *refusals(QUERIES, f"{METER}/queries/Exceeds", b"{}", "caller"),
    post(404, QUERIES, f"{METER}/queries/Fly"),
    post(413, QUERIES, f"{METER}/queries/Exceeds", TOO_LARGE),
    post(415, QUERIES, f"{METER}/queries/Exceeds", content_type="text/plain"),
    post(422, QUERIES, f"{METER}/queries/Exceeds", b'{"limit": "x"}'),
    post(500, QUERIES, f"{FRAGILE}/queries/Peek"),
    get(200, ENTITY, ALICE),
    get(200, ENTITY, "/entities/account/key:never-written"),
    get(400, ENTITY, "/entities/account/12345"),
    *refusals(ENTITY, ALICE, None, "caller"),
    get(404, ENTITY, NOPE),
    get(500, ENTITY, FRAGILE),
    get(200, HISTORY, f"{METER}/history?limit=1"),  # with a next page
    get(200, HISTORY, f"{METER}/history?from=2"),  # the last page
    get(400, HISTORY, f"{METER}/history?limit=0"),
    *refusals(HISTORY, f"{METER}/history", None, "caller"),
    get(404, HISTORY, f"{NOPE}/history"),
    get(200, TIMERS, f"{METER}/timers"),
    get(400, TIMERS, "/entities/meter/12345/timers"),
    *refusals(TIMERS, f"{METER}/timers", None, "caller"),
    get(404, TIMERS, f"{NOPE}/timers"),
    get(200, ENTITIES, "/entities/meter?limit=1"),
    get(200, ENTITIES, "/entities/account?order=change"),
    get(400, ENTITIES, "/entities/account?after=12345"),
    *refusals(ENTITIES, "/entities/account", None, "caller"),
    get(404, ENTITIES, "/entities/nope"),
    get(200, EVENTS, f"{METER}/events?from=2", stream=True),
    get(400, EVENTS, f"{METER}/events?from=0"),
    *refusals(EVENTS, f"{METER}/events", None, "caller"),
    get(404, EVENTS, f"{NOPE}/events"),
    get(200, "/healthz", "/healthz", token=None),
    get(200, "/readyz", "/readyz", token=None),
    get(200, "/metrics", "/metrics", token=None),
    get(200, "/openapi.json", "/openapi.json", token=None),
    get(200, "/docs", "/docs", token=None),
    post(410, COMMANDS, f"{GONE_ACCOUNT}/commands/Open", b'{"owner": "A"}'),
    post(410, QUERIES, f"{GONE_METER}/queries/Exceeds", b'{"limit": 0}'),
    get(410, ENTITY, GONE_ACCOUNT),
    delete(200, "/admin/entities/account/key:bob"),
    delete(400, "/admin/entities/account/12345"),
    delete(401, "/admin/entities/account/key:bob", token=None),
    delete(401, "/admin/entities/account/key:bob", token="both"),  # no admin token
    delete(404, "/admin/entities/nope/key:a"),
    release(200, f"{HELD}/lapse/release"),
    release(404, f"{HELD}/other/release"),  # no such timer pending
    release(404, "/admin/entities/nope/key:a/timers/lapse/release"),
    release(400, "/admin/entities/account/12345/timers/lapse/release"),
    release(401, f"{HELD}/lapse/release", token=None),
    *quarantine_exchanges(),
]
# Admin routes without PACHYDERM_ADMIN_TOKEN: closed.
ADMIN_OFF = [
    delete(403, "/admin/entities/account/key:bob"),
    release(403, f"{HELD}/lapse/release"),
    admin(403, "GET", QUARANTINE),
    admin(403, "GET", f"{POISONED}/c-show"),
    admin(403, "POST", f"{POISONED}/c-show/resume"),
    admin(403, "POST", f"{POISONED}/c-show/skip"),
]
# No worker takes the messages: no reply in time.
SILENT = failures(504)
# The gateway's one place in flight is taken.
OVERLOADED = failures(429)
# The broker is closed.
CLOSED = [*failures(503), get(503, "/readyz", "/readyz", token=None)]
# The event store fails: unavailable, then with a bug of its own.
FAILING_STORE = [
    get(503, HISTORY, f"{METER}/history"),
    get(500, HISTORY, f"{ALICE}/history"),
    get(503, TIMERS, f"{METER}/timers"),
    get(500, TIMERS, f"{ALICE}/timers"),
    get(503, ENTITIES, "/entities/meter"),
    get(500, ENTITIES, "/entities/account"),
    get(503, EVENTS, f"{METER}/events"),
    get(500, EVENTS, f"{ALICE}/events"),
    delete(503, "/admin/entities/meter/key:m"),
    release(503, "/admin/entities/meter/key:m/timers/lapse/release"),
]


class FailingStore(SqliteEventStore):
    """A store whose history of the meter is unavailable, and of any other entity fails
    with a bug of the store's own."""

    async def history(
        self, entity_id: uuid.UUID, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        if entity_id == Ref.from_key("meter", "m").id:
            raise StoreUnavailableError("PostgreSQL unavailable: connection refused")
        raise RuntimeError("a bug in the store")

    async def entity_timers(self, entity_id: uuid.UUID) -> list[StoredTimer]:
        await self.history(entity_id)  # fails as history does
        return []

    async def erase(self, ref: Ref) -> Erasure:
        await self.history(ref.id)  # fails as history does
        raise AssertionError("unreachable")

    async def release_timer(self, entity_id: uuid.UUID, key: str) -> bool:
        await self.history(entity_id)  # fails as history does
        raise AssertionError("unreachable")

    async def load(self, ref: Ref, *, use_snapshot: bool = True) -> LoadedEntity:
        await self.history(ref.id)  # fails as history does
        raise AssertionError("unreachable")

    async def list_entities(
        self,
        entity_type: str,
        *,
        after: uuid.UUID | tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
        by_change: bool = False,
    ) -> list[ListedEntity]:
        await self.history(Ref.from_key(entity_type, "m").id)  # the meter's fails as its history
        return []


async def quarantine(store: EventStore, ref: Ref) -> None:
    """Quarantine commands c-show, c-resume and c-skip of ``ref``, as a worker does."""
    assert isinstance(store, HasQuarantine)
    rows = [
        Quarantined(
            ref.id,
            command_id,
            ref.type,
            0,
            "park",
            "quarantined",
            3,
            "hung",
            encode_message(Message(b"\x80", str(ref.id), command_id, type="Open")),
        )
        for command_id in ("c-show", "c-resume", "c-skip")
    ]
    await store.quarantine_store().quarantine(rows)


async def held_timer(store: EventStore, ref: Ref) -> None:
    """A timer "lapse" of ``ref``, held after its tries, as a worker holds a poison's."""
    due = datetime.now(UTC)
    timer = TimerWrite("lapse", due, "s1", b"\x80")
    await store.commit([Change(ref, 0, "c-held", timers=[timer])])
    await store.hold_timers([(ref.id, "lapse")])


Gateway = Callable[[EmbeddedFleet], AbstractAsyncContextManager[httpx.AsyncClient]]
OPTIONS = GatewayOptions(tokens=TOKENS, max_body=MAX_BODY, admin_token="root")


@asynccontextmanager
async def serving_fleet(fleet: EmbeddedFleet) -> AsyncIterator[httpx.AsyncClient]:
    for gone in (Ref.from_key("account", "gone"), Ref.from_key("meter", "gone")):
        await fleet.store.erase(gone)
    await quarantine(fleet.store, Ref.from_key("account", "poisoned"))
    await held_timer(fleet.store, Ref.from_key("account", "held"))
    async with serving(create_app(fleet.client, fleet.store, OPTIONS, app=APP)) as http:
        yield http


@asynccontextmanager
async def admin_off(fleet: EmbeddedFleet) -> AsyncIterator[httpx.AsyncClient]:
    options = GatewayOptions(tokens=TOKENS, max_body=MAX_BODY)
    async with serving(create_app(fleet.client, fleet.store, options, app=APP)) as http:
        yield http


@asynccontextmanager
async def broker_without_workers(
    fleet: EmbeddedFleet, *, closed: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose broker takes commands no worker consumes; or is closed."""
    transport = InProcessTransport(Topology())
    await transport.start()
    client = Client(None, transport, timeout=0.2)
    await client.start()
    if closed:
        await transport.close()
    try:
        async with serving(create_app(client, None, OPTIONS)) as http:
            yield http
    finally:
        await transport.close()  # idempotent


@asynccontextmanager
async def full_gateway(fleet: EmbeddedFleet) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose client takes one call in flight, and has one waiting for good."""
    transport = InProcessTransport(Topology())
    await transport.start()
    client = Client(None, transport, timeout=60, max_in_flight=1, wait=0)
    await client.start()
    waiting = asyncio.create_task(client.request(Ref.from_key("meter", "w"), "", None))
    await asyncio.sleep(0)  # it takes the place
    try:
        async with serving(create_app(client, None, OPTIONS)) as http:
            yield http
    finally:
        waiting.cancel()
        await transport.close()


@asynccontextmanager
async def closed_broker(fleet: EmbeddedFleet) -> AsyncIterator[httpx.AsyncClient]:
    async with broker_without_workers(fleet, closed=True) as http:
        yield http


@asynccontextmanager
async def failing_store(fleet: EmbeddedFleet) -> AsyncIterator[httpx.AsyncClient]:
    store = await FailingStore.open(":memory:")
    try:
        async with serving(create_app(fleet.client, store, OPTIONS, app=APP)) as http:
            yield http
    finally:
        await store.close()


GATEWAYS: dict[str, tuple[list[Exchange], Gateway]] = {
    "serving": (SERVING, serving_fleet),
    "silent": (SILENT, broker_without_workers),
    "closed": (CLOSED, closed_broker),
    "overloaded": (OVERLOADED, full_gateway),
    "failing-store": (FAILING_STORE, failing_store),
    "admin-off": (ADMIN_OFF, admin_off),
}


def resolve(document: dict[str, Any], reference: str) -> Any:
    node: Any = document
    for part in reference.removeprefix("#/").split("/"):
        node = node[part]
    return node


def conforms(document: dict[str, Any], exchange: Exchange, response: httpx.Response) -> None:
    """``response`` has a content type, and a body valid by the schema, that the document
    declares for the route and status of ``exchange``."""
    operation = document["paths"][exchange.template][exchange.method.lower()]
    declared = operation["responses"][str(response.status_code)]
    answer = resolve(document, declared["$ref"]) if "$ref" in declared else declared
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type in answer["content"], (exchange, media_type)
    schema = answer["content"][media_type].get("schema")
    if schema is not None:
        # The document is the root, so that the schema's references resolve in it.
        validator = jsonschema.Draft202012Validator(
            {**document, **schema}, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        validator.validate(response.json())


@pytest.mark.parametrize("name", GATEWAYS)
async def test_every_answer_is_as_the_document_declares(fleet: EmbeddedFleet, name: str) -> None:
    exchanges, gateway = GATEWAYS[name]
    async with gateway(fleet) as http:
        document = (await http.get("/openapi.json")).json()
        for exchange in exchanges:
            conforms(document, exchange, await exchange.send(http))


def test_every_answer_the_document_declares_is_exercised() -> None:
    document = openapi_document(secured=True, history=True)
    declared = {
        (path, method, status)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
    }
    exercised = {
        (exchange.template, exchange.method.lower(), str(exchange.status))
        for exchanges, _ in GATEWAYS.values()
        for exchange in exchanges
    }
    assert exercised == declared


def test_a_problem_has_only_the_members_its_kind_declares() -> None:
    rejected = Problem(409, "no", kind="rejected", reason="closed", rejection_detail=None)
    assert list(rejected.document.model_dump()) == [
        *("type", "title", "status", "detail", "reason", "rejection_detail")
    ]
    with pytest.raises(ValidationError):
        Problem(409, "no", kind="rejected", reason="closed", rejection_detail=None, more=1)
    with pytest.raises(ValidationError):
        Problem(400, "no", kind="invalid-input", reason="closed")
