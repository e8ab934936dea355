"""The gateway as its commands run it: `pachyderm dev` called by `pachyderm call`, and
`pachyderm gateway` in front of worker processes on RabbitMQ and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from pachyderm.testing import process_fleet

ROOT = Path(__file__).resolve().parents[2]
APP = "examples.demo:APP"
_URL = re.compile(r"(http://127\.0\.0\.1:\d+)")


def environment(**settings: str) -> dict[str, str]:
    """This process's environment without gateway settings of its own, plus ``settings``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PACHYDERM_")}
    return inherited | {f"PACHYDERM_{key.upper()}": value for key, value in settings.items()}


def logged(log: Path) -> str:
    return log.read_text(errors="replace")


async def url_in(log: Path, timeout: float = 20.0) -> str:
    """The first gateway URL the process wrote to ``log``."""
    deadline = time.monotonic() + timeout
    while not (found := _URL.search(logged(log))):
        assert time.monotonic() < deadline, logged(log)
        await asyncio.sleep(0.05)
    return found.group(1)


async def until_ready(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while (await http.get(f"{url}/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "the gateway never became ready"
            await asyncio.sleep(0.05)


@asynccontextmanager
async def pachyderm(
    folder: Path, env: Mapping[str, str], *argv: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """``python -m pachyderm ARGV`` with its output in a log file; SIGTERM on exit, after
    which it must exit cleanly."""
    log = folder / f"{argv[0]}.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pachyderm",
            *argv,
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        yield process, log
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 15)
    assert code == 0, logged(log)


async def call(env: Mapping[str, str], *argv: str) -> tuple[int, object]:
    """``pachyderm call ARGV``: its exit code and the JSON it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pachyderm",
        "call",
        *argv,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode in (0, 3), err.decode()
    return process.returncode, json.loads(out)


async def test_pachyderm_call_reaches_pachyderm_dev_through_its_gateway(tmp_path: Path) -> None:
    env = environment(database_url=f"sqlite:///{tmp_path / 'dev.db'}")
    async with pachyderm(tmp_path, env, "dev", APP, "--port", "0") as (_, log):
        url = await url_in(log)
        await until_ready(url)
        banner = logged(log)
        assert "authentication is OFF" in banner
        assert f"curl -X POST {url}/entities/counter/key:demo/commands/Increment" in banner
        assert f"--gateway {url}" in banner
        alice = ("account", "alice", "Open", "--key", "--gateway", url)
        assert await call(env, *alice, "--data", '{"owner": "A"}') == (
            0,
            {"version": 1, "reply": {"owner": "A", "balance": 0}},
        )
        assert await call(env, *alice, "--data", '{"owner": "A"}') == (
            3,
            {"rejected": "already_open", "detail": None},
        )


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_pachyderm_gateway_serves_a_fleet(
    tmp_path: Path, namespace: str, postgres_dsn: str, rabbitmq_url: str
) -> None:
    async with process_fleet(
        tmp_path, namespace, postgres_dsn, rabbitmq_url, app=APP, partitions=4, cwd=ROOT
    ) as fleet:
        fleet.start_worker("w1")
        env = environment(
            database_url=postgres_dsn,
            amqp_url=rabbitmq_url,
            namespace=namespace,
            partitions="4",
            gateway_port="0",
            gateway_tokens="t0ken=call+read,dashboard=read",
        )
        async with pachyderm(tmp_path, env, "gateway") as (_, log):
            url = await url_in(log)
            await until_ready(url)
            await fleet.balanced()
            caller = {"Authorization": "Bearer t0ken"}
            async with httpx.AsyncClient(base_url=url, headers=caller, timeout=30) as http:
                await exercise(http)
            # `pachyderm call` answers alike over AMQP and through the gateway.
            through = ("--gateway", url)
            for argv in (("--query",), ("Open", "--data", '{"owner": "B"}')):
                alice = ("account", "alice", *argv, "--key")
                over_amqp, over_http = await asyncio.gather(
                    call(env, *alice),
                    call(env | {"PACHYDERM_GATEWAY_TOKEN": "t0ken"}, *alice, *through),
                )
                assert over_amqp == over_http
            assert over_http == (3, {"rejected": "already_open", "detail": None})


async def exercise(http: httpx.AsyncClient) -> None:
    """Commands, idempotent retries, state, history and auth through a fleet's gateway."""
    alice = "/entities/account/key:alice"
    opened = await http.post(f"{alice}/commands/Open", json={"owner": "A"})
    assert opened.json() == {"version": 1, "reply": {"owner": "A", "balance": 0}}
    again = await http.post(f"{alice}/commands/Open", json={"owner": "A"})
    assert (again.status_code, again.json()["reason"]) == (409, "already_open")
    key = {"Idempotency-Key": "deposit-1"}
    first, retried = [
        await http.post(f"{alice}/commands/Deposit", json={"amount": 100}, headers=key)
        for _ in range(2)
    ]
    assert first.json() == retried.json() == {"version": 2, "reply": {"owner": "A", "balance": 100}}
    state = (await http.get(alice)).json()
    assert (state["version"], state["state"]) == (2, {"owner": "A", "balance": 100})
    page = (await http.get(f"{alice}/history?limit=1")).json()
    rest = (await http.get(page["next"])).json()
    events = page["events"] + rest["events"]
    assert [(e["version"], e["name"]) for e in events] == [(1, "Opened"), (2, "Deposited")]
    assert (events[1]["command_id"], rest["next"]) == ("deposit-1", None)
    reader = {"Authorization": "Bearer dashboard"}
    refused = await http.post(f"{alice}/commands/Deposit", json={"amount": 1}, headers=reader)
    assert refused.status_code == 403
    assert (await http.get(alice, headers={"Authorization": ""})).status_code == 401
