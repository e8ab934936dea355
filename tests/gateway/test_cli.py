"""`pachyderm call --gateway` in-process, against a gateway served over HTTP, and the
gateway command's refusal to start without tokens."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest

from pachyderm import load_settings
from pachyderm._embedded import EmbeddedFleet
from pachyderm.cli import main
from pachyderm.gateway import GatewayOptions, create_app

from .serving import APP, TOKENS, serving


@pytest.fixture
async def gateway_url(fleet: EmbeddedFleet) -> AsyncIterator[str]:
    asgi = create_app(fleet.client, fleet.store, GatewayOptions(tokens=TOKENS), app=APP)
    async with serving(asgi) as http:
        yield str(http.base_url)


@pytest.fixture(autouse=True)
def caller_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACHYDERM_GATEWAY_TOKEN", "caller-token")
    monkeypatch.delenv("PACHYDERM_GATEWAY_URL", raising=False)


async def call(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # main runs its own event loop: give it a thread.
    code = await asyncio.to_thread(main, ["call", *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_a_call_prints_the_reply_as_over_amqp(
    gateway_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account = ("account", "bob", "--key", "--gateway", gateway_url)
    opened = await call(capsys, *account[:2], "Open", *account[2:], "--data", '{"owner": "Bob"}')
    assert opened == (0, '{"version": 1, "reply": {"owner": "Bob", "balance": 0}}\n', "")
    again = await call(capsys, *account[:2], "Open", *account[2:], "--data", '{"owner": "B"}')
    assert again == (3, '{"rejected": "already_open", "detail": null}\n', "")
    state = await call(capsys, *account, "--query")
    assert json.loads(state[1]) == {"version": 1, "reply": {"owner": "Bob", "balance": 0}}
    named = await call(
        capsys,
        "meter",
        "m",
        "Exceeds",
        "--key",
        "--query",
        "--data",
        '{"limit": 0}',
        "--gateway",
        gateway_url,
    )
    assert json.loads(named[1]) == {"version": 0, "reply": False}


async def test_a_command_id_makes_the_retry_safe(
    gateway_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("counter", "c", "Increment", "--key", "--command-id", "once", "--gateway", gateway_url)
    first, second = await call(capsys, *argv), await call(capsys, *argv)
    assert first == second == (0, '{"version": 1, "reply": {"count": 1}}\n', "")


async def test_the_gateways_errors_are_reported(
    gateway_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = await call(capsys, "account", "a", "Deposit", "--key", "--gateway", gateway_url)
    assert (code, err) == (1, "pachyderm: invalid Deposit: amount: Field required (HTTP 422)\n")
    monkeypatch.delenv("PACHYDERM_GATEWAY_TOKEN")
    code, _, err = await call(
        capsys, "counter", "c", "Increment", "--key", "--gateway", gateway_url
    )
    assert code == 1
    assert "(HTTP 401); set PACHYDERM_GATEWAY_TOKEN" in err


async def test_an_unreachable_gateway_is_reported(
    capsys: pytest.CaptureFixture[str], unused_tcp_port: int
) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"
    code, _, err = await call(capsys, "counter", "c", "Increment", "--key", "--gateway", url)
    assert code == 1
    assert "cannot reach the gateway" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["counter", "c", "--key"], "name the command to send"),
        (["counter", "c", "Increment", "--key", "--gateway", "file:///etc/passwd"], "http://"),
    ],
)
def test_a_call_is_checked_before_it_goes_out(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["call", *argv]) == 1
    assert message in capsys.readouterr().err


def test_the_gateway_refuses_to_start_without_tokens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PACHYDERM_GATEWAY_AUTH", raising=False)
    monkeypatch.setenv("PACHYDERM_GATEWAY_TOKENS", " ")
    assert main(["gateway"]) == 1
    assert "the gateway needs bearer tokens" in capsys.readouterr().err


def test_the_environment_names_the_gateway_to_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACHYDERM_GATEWAY_URL", "http://gateway.example:8080")
    monkeypatch.setenv("PACHYDERM_GATEWAY_TOKEN", "s3cret")
    settings = load_settings()
    assert settings.gateway_url == "http://gateway.example:8080"
    assert settings.gateway_token.get_secret_value() == "s3cret"


def test_a_port_in_use_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        assert main(["dev", "examples.demo:APP", "--port", port]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
