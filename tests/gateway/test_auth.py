"""Bearer tokens: parsing, constant-time lookup, 401 and 403 over HTTP, turning it off."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from pydantic import SecretStr

from pachyderm import Settings
from pachyderm._embedded import EmbeddedFleet
from pachyderm.gateway import GatewayOptions, Right, Tokens, create_app

from .serving import CALLER, READER, problem, serving

COMMAND = "/entities/counter/key:c/commands/Increment"
STATE = "/entities/counter/key:c"


def test_tokens_grant_their_rights() -> None:
    tokens = Tokens.parse(" s3cret=call+read , dashboard=read,b64+/token==call")
    assert tokens.rights_of("s3cret") == frozenset({Right.CALL, Right.READ})
    assert tokens.rights_of("dashboard") == frozenset({Right.READ})
    assert tokens.rights_of("b64+/token=") == frozenset({Right.CALL})
    assert tokens.rights_of("s3cre") is None
    assert tokens.rights_of("") is None
    assert "s3cret" not in repr(tokens)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("hunter2", "entry 1 of 1 must read token=right+right"),
        ("ok=read,hunter2=wrte", "entry 2 of 2 has rights 'wrte'"),
        ("hunter2=", "has rights ''"),
        ("hun ter2=read", "entry 1 of 1 must read"),
        ("hunter2=read,hunter2=call", "entry 2 of 2 repeats an earlier token"),
        (",", "no bearer tokens"),
    ],
)
def test_bad_tokens_are_refused_without_repeating_them(text: str, found: str) -> None:
    with pytest.raises(ValueError, match=re.escape(found)) as refused:
        Tokens.parse(text)
    assert "hunter2" not in str(refused.value)


def test_authentication_is_on_unless_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="PACHYDERM_GATEWAY_TOKENS"):
        GatewayOptions.from_settings(Settings(gateway_auth=True))
    configured = Settings(gateway_tokens=SecretStr("t=read"), gateway_max_body=10)
    options = GatewayOptions.from_settings(configured)
    assert options.tokens is not None
    assert (options.tokens.rights_of("t"), options.max_body) == (frozenset({Right.READ}), 10)
    with caplog.at_level(logging.WARNING):
        off = GatewayOptions.from_settings(Settings(gateway_auth=False))
    assert off.tokens is None
    assert "authentication is OFF" in caplog.text


async def test_no_or_an_unknown_token_is_401(http: httpx.AsyncClient) -> None:
    for authorization, challenge in (
        (None, 'Bearer realm="pachyderm"'),
        ("Basic caller-token", 'Bearer realm="pachyderm"'),
        ("Bearer", 'Bearer realm="pachyderm"'),
        ("Bearer wrong-token", 'Bearer realm="pachyderm", error="invalid_token"'),
        ("bearer caller-tokens", 'Bearer realm="pachyderm", error="invalid_token"'),
    ):
        headers = {"Authorization": authorization} if authorization else {}
        response = await http.get(STATE, headers=headers)
        problem(response, 401)
        assert response.headers["WWW-Authenticate"] == challenge, authorization


async def test_the_scheme_is_case_insensitive(http: httpx.AsyncClient) -> None:
    response = await http.get(STATE, headers={"Authorization": "bearer caller-token"})
    assert response.status_code == 200


async def test_a_token_without_the_right_is_403(http: httpx.AsyncClient) -> None:
    refused = await http.post(COMMAND, json={}, headers=READER)
    assert "'call'" in problem(refused, 403)["detail"]
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    assert (await http.get(STATE, headers=READER)).status_code == 200
    assert (await http.post(COMMAND, json={}, headers=CALLER)).status_code == 200


async def test_the_token_is_checked_before_the_body_is_read(http: httpx.AsyncClient) -> None:
    response = await http.post(COMMAND, content=b"x" * 2_000_000, headers=READER)
    problem(response, 403)


async def test_health_metrics_and_the_api_document_need_no_token(http: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await http.get(path)).status_code == 200, path


async def test_without_authentication_anyone_may_call(fleet: EmbeddedFleet) -> None:
    asgi = create_app(fleet.client, fleet.store, GatewayOptions(tokens=None))
    async with serving(asgi) as http:
        assert (await http.post(COMMAND, json={})).json()["version"] == 1
        assert (await http.get(STATE)).json()["version"] == 1


async def test_the_development_gateway_answers_only_loopback_names(fleet: EmbeddedFleet) -> None:
    asgi = create_app(fleet.client, fleet.store, GatewayOptions.for_development(Settings()))
    async with serving(asgi) as http:
        assert (await http.get(STATE)).status_code == 200
        assert (await http.get(STATE, headers={"Host": "localhost:1234"})).status_code == 200
        rebound = await http.post(COMMAND, json={}, headers={"Host": "attacker.example"})
        assert "127.0.0.1" in problem(rebound, 403)["detail"]
