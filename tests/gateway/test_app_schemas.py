"""/openapi.json of a gateway given the app: a schema per command, query, event and state,
generated from the classes (pydantic models and dataclasses alike), and a path per
command and query whose body is that schema; what the schema accepts is what the
gateway accepts."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Generic, TypeVar

import httpx
import jsonschema
import pydantic
import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.routing import Match, Route

from pachyderm import App, Client, Entity, HandleResult
from pachyderm._embedded import EmbeddedFleet, embedded
from pachyderm._messages import MessageTypesSpec
from pachyderm.gateway import GatewayOptions, create_app
from pachyderm.gateway._openapi import openapi_document
from pachyderm.gateway._schemas import references

from .serving import APP, CALLER, JSON, TOKENS, serving
from .test_openapi import resolve

T = TypeVar("T")


class Address(BaseModel):
    city: str


class Move(BaseModel):
    """Move the place to another address."""

    to: Address


class Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")

    note: str = ""


class Tree(BaseModel):
    name: str
    children: list[Tree] = []


class Plant(BaseModel, Generic[T]):
    """A generic, nesting a recursive model."""

    tree: Tree
    tag: T


@pydantic.dataclasses.dataclass(frozen=True)
class Rename:
    name: str


@dataclasses.dataclass(frozen=True)
class Moved:
    to: Address


@dataclasses.dataclass(frozen=True)
class Hidden:
    pass


@dataclasses.dataclass(frozen=True)
class Underscored:
    pass


class PlaceState(BaseModel):
    address: Address | None = None
    name: str = ""


class Place(Entity[PlaceState]):
    # A command and an event under one name; a name a path must escape; one it cannot hold.
    commands: ClassVar[MessageTypesSpec] = {
        "Move": Move,
        "lenient v2": Lenient,
        "Rename": Rename,
        "a/b": Hidden,
        "Plant": Plant[int],
        "lenient_v2": Underscored,  # written as "lenient v2" is
    }
    events: ClassVar[MessageTypesSpec] = {"Move": Moved}
    state_type = PlaceState

    def init(self) -> PlaceState:
        return PlaceState()

    def handle(self, message: Any, state: PlaceState) -> HandleResult:
        return [Moved(message.to)] if isinstance(message, Move) else []

    def update(self, event: Any, state: PlaceState) -> PlaceState:
        return state.model_copy(update={"address": event.to})


PLACES = App([Place])


def schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


def body_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    operation = document["paths"][path]["post"]
    found: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return found


def validator(document: dict[str, Any], node: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """``node`` checked with the document as its root, so that its references resolve."""
    return jsonschema.Draft202012Validator(
        {**document, **node}, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def test_a_strict_command_has_its_fields_and_no_other() -> None:
    document = openapi_document(secured=True, history=True, app=APP)
    deposit = schema(document, "account.command.Deposit")
    assert deposit["properties"] == {"amount": {"type": "integer", "exclusiveMinimum": 0}}
    assert deposit["required"] == ["amount"]
    assert deposit["additionalProperties"] is False
    assert body_schema(document, "/entities/account/{id}/commands/Deposit") == {
        "$ref": "#/components/schemas/account.command.Deposit"
    }
    # A dataclass (examples/counter.py) with a default.
    increment = schema(document, "counter.command.Increment")
    assert increment["properties"] == {"amount": {"type": "integer", "default": 1}}
    assert increment["additionalProperties"] is False
    assert schema(document, "meter.query.Exceeds")["required"] == ["limit"]


def test_events_and_states_are_described_as_read_back() -> None:
    document = openapi_document(secured=True, history=True, app=APP)
    deposited = schema(document, "account.event.Deposited")
    assert deposited["properties"] == {"amount": {"type": "integer"}}
    assert "additionalProperties" not in deposited  # events are read tolerantly
    state = schema(document, "account.state")
    assert set(state["properties"]) == {"owner", "balance"}
    assert schema(document, "meter.state") == {}  # state_type not given: any data
    operation = document["paths"]["/entities/account/{id}"]["get"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"] == {"state": {"$ref": "#/components/schemas/account.state"}}
    history = document["paths"]["/entities/account/{id}/history"]["get"]
    page = history["responses"]["200"]["content"]["application/json"]["schema"]
    names = [
        event["properties"]["name"]["const"]
        for event in page["properties"]["events"]["items"]["anyOf"]
    ]
    assert names == ["Opened", "Deposited", "Withdrawn", *names[3:]]
    assert len(names) == 6


def test_names_nesting_and_a_type_that_chooses_extra() -> None:
    document = openapi_document(secured=False, history=False, app=PLACES)
    validate(document)
    move = schema(document, "place.command.Move")
    assert move["description"] == "Move the place to another address."
    assert move["properties"]["to"] == {"$ref": "#/components/schemas/place.Address"}
    assert schema(document, "place.Address")["properties"] == {"city": {"type": "string"}}
    # The event of the same name is its own schema, and tolerant.
    assert "additionalProperties" not in schema(document, "place.event.Move")
    # extra="allow" is the type's choice: unknown fields are kept, not refused.
    assert schema(document, "place.command.lenient_v2")["additionalProperties"] is True
    assert schema(document, "place.command.Rename")["additionalProperties"] is False
    assert schema(document, "place.command.lenient_v2-2")["title"] == "Underscored"
    operation = document["paths"]["/entities/place/{id}/commands/lenient_v2"]["post"]
    assert operation["operationId"] == "place.command.lenient_v2-2"
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/place.command.lenient_v2-2"
    }
    plant = schema(document, "place.command.Plant")
    assert plant["properties"]["tag"] == {"type": "integer"}
    tree = resolve(document, plant["properties"]["tree"]["$ref"])
    assert resolve(document, tree["properties"]["children"]["items"]["$ref"]) is tree
    for reference in references(document):
        assert resolve(document, reference) is not None, reference
    paths = set(document["paths"])
    assert "/entities/place/{id}/commands/lenient%20v2" in paths
    assert not [path for path in paths if "a/b" in path or "a%2Fb" in path]
    assert "/entities/place/{id}/history" not in paths


class Opaque:
    """A type pydantic takes as it is: JSON Schema cannot describe it."""


class OpaqueState(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    handle: Opaque | None = None


class Odd(Entity[OpaqueState]):
    commands = (Rename,)
    state_type = OpaqueState

    def init(self) -> OpaqueState:
        return OpaqueState()

    def handle(self, message: Any, state: OpaqueState) -> HandleResult:
        return []

    def update(self, event: Any, state: OpaqueState) -> OpaqueState:
        return state


def test_a_type_json_schema_cannot_describe_is_any_value() -> None:
    document = openapi_document(secured=False, history=False, app=App([Odd]))
    validate(document)
    handle = schema(document, "odd.state")["properties"]["handle"]["anyOf"][0]
    assert handle == {"description": "Any value: its type has no JSON Schema"}


def test_without_the_app_the_document_names_no_message() -> None:
    document = openapi_document(secured=True, history=True)
    assert not [name for name in document["components"]["schemas"] if "." in name]
    assert not [path for path in document["paths"] if path.startswith("/entities/account")]


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """The gateway of an embedded fleet of PLACES, and an HTTP client for it."""
    async with embedded(PLACES) as fleet:
        client = Client(PLACES, fleet.transport)
        await client.start()
        asgi = create_app(client, fleet.store, GatewayOptions(tokens=TOKENS), app=PLACES)
        async with serving(asgi) as http:
            yield asgi, http


BODIES = [
    {"to": {"city": "Oslo"}},
    {"to": {"city": "Oslo"}, "from": "Bergen"},  # unknown field
    {"to": {"town": "Oslo"}},  # nested: missing field
    {"to": "Oslo"},
    {},
]


async def test_what_the_schema_accepts_the_gateway_accepts(
    gateway: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, places = gateway
    document = (await places.get("/openapi.json")).json()
    path = "/entities/place/{id}/commands/Move"
    accepts = validator(document, body_schema(document, path))
    responses = document["paths"][path]["post"]["responses"]
    for body in BODIES:
        response = await places.post(
            "/entities/place/key:home/commands/Move", json=body, headers=CALLER | JSON
        )
        assert response.status_code in {200, 422}, response.text
        assert accepts.is_valid(body) is (response.status_code == 200), body
        if response.status_code == 200:
            # The reply is the new state, as the path's answer says.
            answer = responses["200"]["content"]["application/json"]["schema"]
            validator(document, answer).validate(response.json())
            assert response.json()["reply"]["address"] == {"city": "Oslo"}


async def test_every_path_is_served_by_a_route(
    gateway: tuple[Starlette, httpx.AsyncClient],
) -> None:
    asgi, places = gateway
    document = (await places.get("/openapi.json")).json()
    validate(document)
    routes = [route for route in asgi.routes if isinstance(route, Route)]
    for path in document["paths"]:
        concrete = path.replace("{id}", "key:x").replace("%20", " ")
        scope = {"type": "http", "path": concrete, "method": "GET"}
        assert any(route.matches(scope)[0] is not Match.NONE for route in routes), path


async def test_each_entity_type_has_its_timers_path_where_history_is_served(
    gateway: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, places = gateway
    document = (await places.get("/openapi.json")).json()
    operation = document["paths"]["/entities/place/{id}/timers"]["get"]
    assert operation["tags"] == ["place"]
    assert operation["parameters"] == [{"$ref": "#/components/parameters/id"}]
    response = await places.get("/entities/place/key:home/timers", headers=CALLER)
    assert response.status_code == 200, response.text
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    validator(document, answer).validate(response.json())
    assert response.json()["type"] == "place"
    assert response.json()["timers"] == []
    without_store = openapi_document(secured=False, history=False, app=PLACES)["paths"]
    assert "/entities/place/{id}/timers" not in without_store


async def test_the_fleet_gateway_describes_its_app(fleet: EmbeddedFleet) -> None:
    client = Client(APP, fleet.transport)
    await client.start()
    async with serving(
        create_app(client, fleet.store, GatewayOptions(tokens=TOKENS), app=APP)
    ) as http:
        document = (await http.get("/openapi.json")).json()
        response = await http.post(
            "/entities/account/key:s/commands/Open", json={"owner": "S"}, headers=CALLER | JSON
        )
    path = document["paths"]["/entities/account/{id}/commands/Open"]["post"]
    assert path["tags"] == ["account"]
    answer = path["responses"]["200"]["content"]["application/json"]["schema"]
    validator(document, answer).validate(response.json())
    assert not validator(document, answer).is_valid({"version": 1, "reply": {"balance": "x"}})
