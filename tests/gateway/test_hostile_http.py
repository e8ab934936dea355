"""Hostile and buggy HTTP callers: whatever they send, the gateway answers with a
clear status (a problem document for every error), never a 5xx of its own, and
keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pachyderm._embedded import embedded

from .conftest import gateway
from .serving import APP, CALLER, READER

# 500 is the answer for an entity whose own code raises (the test app's "fragile"
# type); anything else in the 5xx range would be the gateway failing.
EXPECTED = {200, 400, 401, 403, 404, 405, 409, 413, 415, 422}

segment = st.one_of(
    st.sampled_from(["account", "counter", "meter", "nope", "", ".", "..", "%", "key:"]),
    st.text(max_size=20),
)
identifier = st.one_of(
    st.uuids().map(str),
    st.text(max_size=20).map(lambda key: f"key:{key}"),
    st.text(max_size=40),
)
name = st.one_of(
    st.sampled_from(["Open", "Deposit", "Withdraw", "Transfer", "Increment", "Add", "Exceeds"]),
    st.text(max_size=20),
)
tail: st.SearchStrategy[list[str]] = st.one_of(
    st.just([]),
    st.tuples(st.sampled_from(["commands", "queries"]), name).map(list),
    st.just(["history"]),
    st.lists(segment, max_size=3),
)
paths = st.builds(
    lambda kind, entity_id, rest: (
        "/entities/" + "/".join(quote(part, safe="") for part in [kind, entity_id, *rest])
    ),
    segment,
    identifier,
    tail,
) | st.lists(segment, max_size=4).map(
    lambda parts: "/" + "/".join(quote(p, safe="") for p in parts)
)
queries = st.dictionaries(
    st.sampled_from(["from", "limit", "x"]),
    st.one_of(st.integers(-(10**12), 10**12).map(str), st.text(max_size=10)),
    max_size=2,
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["owner", "amount", "to", "limit"]), inner, max_size=3
            )
        ),
        max_leaves=8,
    ).map(lambda value: json.dumps(value).encode()),
)


def header_values(max_size: int) -> st.SearchStrategy[str]:
    """Printable ASCII. HTTP drops a field value's surrounding spaces, so a value
    with them cannot reach the gateway as such (and httpx refuses to send it)."""
    printable = st.characters(min_codepoint=32, max_codepoint=126)
    return st.text(printable, max_size=max_size).map(str.strip)


header_sets = st.fixed_dictionaries(
    {},
    optional={
        "Authorization": st.one_of(
            st.just(CALLER["Authorization"]),
            st.just(READER["Authorization"]),
            header_values(40),
        ),
        "Content-Type": st.one_of(
            st.sampled_from(["application/json", "text/plain", "application/json; charset=x"]),
            header_values(30),
        ),
        "Idempotency-Key": header_values(220),
    },
)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]]:
    """One fleet and gateway for every generated request (hypothesis runs many)."""
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    fleet = loop.run_until_complete(stack.enter_async_context(embedded(APP)))
    http = loop.run_until_complete(stack.enter_async_context(gateway(fleet, APP)))
    yield loop, http
    loop.run_until_complete(stack.aclose())
    loop.close()


async def exchange(http: httpx.AsyncClient, request: dict[str, Any]) -> httpx.Response:
    return await http.request(
        request["method"],
        request["path"],
        params=request["query"],
        content=request["body"],
        headers=request["headers"],
    )


async def still_serving(http: httpx.AsyncClient) -> None:
    canary = f"/entities/counter/{uuid.uuid4()}/commands/Increment"
    response = await http.post(canary, json={"amount": 1}, headers=CALLER)
    assert response.status_code == 200, response.text


@settings(
    max_examples=150,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    request=st.fixed_dictionaries(
        {
            "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
            "path": paths,
            "query": queries,
            "body": bodies,
            "headers": header_sets,
        }
    )
)
def test_every_request_gets_a_clear_answer_and_the_gateway_keeps_serving(
    served: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient], request: dict[str, Any]
) -> None:
    loop, http = served
    response = loop.run_until_complete(exchange(http, request))
    assert response.status_code in EXPECTED, (response.status_code, response.text)
    if response.status_code != 200:
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["status"] == response.status_code
        assert "Traceback" not in response.text
    loop.run_until_complete(still_serving(http))
