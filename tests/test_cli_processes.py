"""The pachyderm command as a process: what it loads to start, and where its health
endpoints listen (or why it stops).

Start-up is pinned by what ``--help`` imports, never by timing it: each check runs
in a fresh interpreter, since this process has long imported everything.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pachyderm import PachydermError, Settings
from pachyderm.cli._runtime import health_endpoints
from pachyderm.telemetry import HealthServer

from .python_process import ROOT, run_python

# What a subcommand loads when it runs, and --help must not.
HEAVY = ["aio_pika", "asyncpg", "starlette", "uvicorn", "opentelemetry.sdk"]

LOADED_BY = """
import contextlib, json, sys
from pachyderm.cli import main
with contextlib.suppress(SystemExit):
    main(sys.argv[1:])
print(json.dumps(sorted(set({heavy}) & set(sys.modules))), file=sys.stderr)
"""


def loaded_by(*argv: str) -> list[str]:
    """The heavy libraries ``pachyderm ARGV`` has imported when it returns."""
    finished = run_python(
        "-c",
        LOADED_BY.format(heavy=HEAVY),
        *argv,
        env={k: v for k, v in os.environ.items() if not k.startswith("PACHYDERM_")},
    )
    loaded: list[str] = json.loads(finished.stderr.splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["worker", "--help"],
        ["asyncapi", "--help"],
        ["asyncapi"],  # a usage mistake: no app
        ["--version"],
        ["worker"],  # a usage mistake: no app
        ["effects", "examples.demo:APP", "--config", "{"],
    ],
)
def test_the_command_line_answers_without_loading_the_services_libraries(
    argv: list[str],
) -> None:
    assert loaded_by(*argv) == []


def test_the_libraries_load_with_the_subcommand_that_needs_them() -> None:
    # The check above would pass if nothing ever loaded them: a subcommand does.
    assert "asyncpg" in loaded_by("--database-url", "postgresql://nobody@127.0.0.1:1/x", "migrate")


def test_python_dash_m_pachyderm_is_the_command() -> None:
    finished = run_python("-m", "pachyderm", "--help")
    assert finished.returncode == 0, finished.stderr
    assert "--log-level" in finished.stdout
    assert "--version" in finished.stdout


@pytest.mark.parametrize("command", ["worker", "effects"])
def test_a_taken_health_port_stops_the_process_with_a_clear_error(
    command: str, tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PACHYDERM_")}
        environment |= {
            "PACHYDERM_HEALTH_PORT": str(port),
            "PACHYDERM_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
            # Nothing listens here: the health port is taken before any connection.
            "PACHYDERM_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
        }
        finished = run_python("-m", "pachyderm", command, "examples.demo:APP", env=environment)
    assert finished.returncode == 1, finished.stderr
    last = finished.stderr.splitlines()[-1]
    assert last.startswith(
        f"pachyderm: cannot serve the health endpoints on 127.0.0.1:{port}: Address already in use;"
        " give each process of this host its own PACHYDERM_HEALTH_PORT, or 0"
    )


async def test_health_endpoints_on_a_taken_port_are_an_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        settings = Settings(health_port=taken.getsockname()[1])
        with pytest.raises(PachydermError, match="PACHYDERM_HEALTH_PORT"):
            async with health_endpoints({}, settings):
                raise AssertionError("served on a taken port")


async def test_port_zero_picks_a_free_port_written_to_the_port_file(tmp_path: Path) -> None:
    port_file = tmp_path / "health.port"
    settings = Settings(health_port=0, health_port_file=port_file)
    async with health_endpoints({}, settings), health_endpoints({}, settings):
        # Two on one host, each on a port of its own; the file names the last.
        port = int(port_file.read_text())
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


async def test_health_endpoints_listen_on_the_health_host(unused_tcp_port: int) -> None:
    settings = Settings(health_host="127.0.0.2", health_port=unused_tcp_port)
    async with health_endpoints({}, settings):
        with socket.create_connection(("127.0.0.2", unused_tcp_port), timeout=5):
            pass
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", unused_tcp_port), timeout=5).close()


def test_health_endpoints_listen_where_the_gateway_does_by_default() -> None:
    gateway_host = Settings.model_fields["gateway_host"].default
    assert Settings.model_fields["health_host"].default == gateway_host == "127.0.0.1"
    assert inspect.signature(HealthServer).parameters["host"].default == gateway_host


def run_dev(tmp_path: Path, *options: str) -> tuple[int, str]:
    """``pachyderm dev`` of PACHYDERM_APP until it is up, then SIGTERM: exit status, stderr."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PACHYDERM_")}
    environment |= {
        "PACHYDERM_APP": "examples.demo:APP",
        "PACHYDERM_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
    }
    with subprocess.Popen(
        [sys.executable, "-m", "pachyderm", "dev", "--port", "0", *options],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("Ctrl+C stops it."):
                break
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    return process.returncode, err


def test_the_log_level_reaches_the_running_process(tmp_path: Path) -> None:
    code, err = run_dev(tmp_path)
    assert code == 0, err
    assert " INFO pachyderm.worker: serving partitions" in err
    code, err = run_dev(tmp_path, "--log-level", "warning")
    assert code == 0, err
    assert " INFO " not in err
