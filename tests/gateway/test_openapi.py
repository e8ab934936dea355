"""The OpenAPI document: 3.1, every route with its methods, every reference resolvable
(that every answer is as it declares: test_openapi_conformance)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from pachyderm import Client
from pachyderm._embedded import EmbeddedFleet
from pachyderm.gateway import GatewayOptions, create_app
from pachyderm.gateway._schemas import references

from .serving import TOKENS, serving


def resolve(document: dict[str, Any], reference: str) -> Any:
    assert reference.startswith("#/"), reference
    node: Any = document
    for part in reference[2:].split("/"):
        node = node[part]
    return node


@pytest.mark.parametrize(("tokens", "with_store"), [(TOKENS, True), (None, False)])
async def test_the_document_describes_every_route(
    fleet: EmbeddedFleet, tokens: Any, with_store: bool
) -> None:
    store = fleet.store if with_store else None
    asgi = create_app(Client(None, fleet.transport), store, GatewayOptions(tokens=tokens))
    async with serving(asgi) as http:
        response = await http.get("/openapi.json")
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"] == "3.1.0"
    routes = {
        route.path: {method.lower() for method in route.methods or ()} - {"head"}
        for route in asgi.routes
        if isinstance(route, Route)
    }
    assert {path: set(operations) for path, operations in document["paths"].items()} == routes
    assert ("/entities/{type}/{id}/history" in routes) is with_store
    for reference in set(references(document)):
        assert resolve(document, reference), reference
    for path, operations in document["paths"].items():
        for operation in operations.values():
            statuses = set(operation["responses"])
            assert "200" in statuses
            public = path in {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"}
            assert ({"401", "403"} <= statuses) is (tokens is not None and not public), path
            for name in path.replace("}", "{").split("{")[1::2]:
                assert {"$ref": f"#/components/parameters/{name}"} in operation["parameters"]
    assert ("security" in document) is (tokens is not None)


async def test_the_document_is_a_valid_openapi_document(http: httpx.AsyncClient) -> None:
    validate((await http.get("/openapi.json")).json())
