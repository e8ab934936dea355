"""CI's dependency audit (.ci/audit): loud when it cannot run, strict when it can.

A fake OSV service on loopback stands in for the real one, so each branch runs
here: unreachable (banner, exit 0, or 3 when required), reachable and clean,
reachable with a finding, reachable but failing on a package. The reachable
cases run the real ``make audit`` (pip-audit over .venv) against the fake.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chaos.services import free_port

ROOT = Path(__file__).resolve().parents[2]
AUDIT = ROOT / ".ci" / "audit"
FAKE_ID = "PYSEC-0000-TEST"


class FakeOsv(ThreadingHTTPServer):
    """Answers OSV queries: no vulnerability, except ``vulnerable`` (a finding) and
    ``failing`` (HTTP 500)."""

    vulnerable: str | None = None
    failing: str | None = None
    queried: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/query"


class _Handler(BaseHTTPRequestHandler):
    server: FakeOsv

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = query["package"]["name"]
        self.server.queried.append(name)
        if name == self.server.failing:
            self.send_error(500)
            return
        answer: dict[str, object] = {}
        if name == self.server.vulnerable:
            affected = {
                "package": {"name": name, "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
            }
            answer = {"vulns": [{"id": FAKE_ID, "summary": "test", "affected": [affected]}]}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def osv() -> Iterator[FakeOsv]:
    server = FakeOsv(("127.0.0.1", 0), _Handler)
    server.queried = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def audit(osv_url: str, *, required: bool = False) -> subprocess.CompletedProcess[str]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PACHYDERM_AUDIT_")},
        "PACHYDERM_AUDIT_SERVICES": "osv",
        "PACHYDERM_AUDIT_OSV_URL": osv_url,
        **({"PACHYDERM_AUDIT_REQUIRED": "1"} if required else {}),
    }
    return subprocess.run(
        [str(AUDIT)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def installed() -> None:
    """``make audit`` would first reinstall .venv if pyproject.toml changed since: not
    in a test. CI installs right before the tests."""
    up_to_date = subprocess.run(
        ["make", "--question", ".venv/bin/.installed"], cwd=ROOT, check=False
    )
    if up_to_date.returncode != 0:
        message = ".venv is older than pyproject.toml: run `make .venv/bin/.installed`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize("required", [False, True])
def test_an_unreachable_service_is_a_loud_not_run(required: bool) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1/query"
    done = audit(closed, required=required)
    assert done.returncode == (3 if required else 0), done.stderr
    assert "dependency audit NOT RUN: no vulnerability service is reachable" in done.stderr
    assert f"osv: {closed}:" in done.stderr  # the reason
    assert "auditing" not in done.stdout


def test_a_clean_environment_passes_having_asked_about_every_package(
    installed: None, osv: FakeOsv
) -> None:
    done = audit(osv.url, required=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No known vulnerabilities found" in done.stderr
    # Every installed distribution was asked about, the editable project left out.
    pinned = (ROOT / ".venv" / "audited-requirements.txt").read_text().split()
    names = {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() for line in pinned}
    assert {"aio-pika", "asyncpg", "msgpack", "pip", "pip-audit"} <= names
    assert names == set(osv.queried)
    assert "pachyderm-entities" not in names


def test_a_finding_fails_the_audit(installed: None, osv: FakeOsv) -> None:
    osv.vulnerable = "msgpack"
    done = audit(osv.url)
    assert done.returncode != 0
    assert re.search(rf"^msgpack +\S+ +{FAKE_ID}", done.stdout, re.MULTILINE), done.stdout
    assert "Found 1 known vulnerability in 1 package" in done.stderr


def test_a_package_the_service_cannot_answer_for_fails_the_audit(
    installed: None, osv: FakeOsv
) -> None:
    osv.failing = "asyncpg"
    done = audit(osv.url)
    assert done.returncode != 0, done.stdout
    assert "No known vulnerabilities found" not in done.stderr
    assert "500" in done.stderr
