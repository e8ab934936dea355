"""The pytest plugin as a user meets it: a project's own test files, run by pytest with
the plugin loaded from its entry point, using its fixtures on the example counter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ("pytester",)

ROOT = Path(__file__).resolve().parents[2]

USES_THE_EMBEDDED_FLEET = """
import pytest

from examples.counter import Counter, Increment, app


@pytest.fixture
def pachyderm_app():
    return app


async def test_counts(pachyderm_fleet):
    reply = await pachyderm_fleet.client.call(Counter.ref("c"), Increment(amount=3))
    assert reply == {"count": 3}
    assert await pachyderm_fleet.client.query(Counter.ref("c")) == {"count": 3}
"""

USES_THE_APP_CONFIGURED = """
from examples.counter import Counter, Increment, app


async def test_counts(pachyderm_app, pachyderm_fleet):
    assert pachyderm_app is app
    assert await pachyderm_fleet.client.call(Counter.ref("c"), Increment()) == {"count": 1}
"""

USES_WORKER_PROCESSES = """
from examples.counter import Counter, Increment


async def test_counts(pachyderm_process_fleet):
    async with pachyderm_process_fleet.client() as client:
        assert await client.call(Counter.ref("c"), Increment(amount=2)) == {"count": 2}
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A user's project: pytest-asyncio in auto mode, no app named anywhere yet."""
    monkeypatch.delenv("PACHYDERM_APP", raising=False)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    return pytester


def test_a_user_test_overriding_the_app_calls_it_on_the_embedded_fleet(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_counter=USES_THE_EMBEDDED_FLEET)
    project.runpytest().assert_outcomes(passed=1)


def test_the_fleet_fixture_runs_in_pytest_asyncio_strict_mode_too(
    project: pytest.Pytester,
) -> None:
    project.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    marked = USES_THE_EMBEDDED_FLEET.replace(
        "async def test_counts", "@pytest.mark.asyncio\nasync def test_counts"
    )
    project.makepyfile(test_counter=marked)
    project.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize("where", ["ini", "environment"])
def test_the_app_is_named_in_the_configuration_or_the_environment(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "ini":
        project.makeini(
            "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
            "pachyderm_app = examples.counter:app\n"
        )
    else:
        monkeypatch.setenv("PACHYDERM_APP", "examples.counter:app")
    project.makepyfile(test_counter=USES_THE_APP_CONFIGURED)
    project.runpytest().assert_outcomes(passed=1)


def test_no_app_named_is_an_error_saying_how_to_name_one(project: pytest.Pytester) -> None:
    project.makepyfile(test_counter=USES_THE_APP_CONFIGURED)
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*which app? set `pachyderm_app = module:attribute`*"])


def test_without_services_the_process_fleet_is_skipped_saying_why(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PACHYDERM_TEST_DATABASE_URL", raising=False)
    monkeypatch.delenv("PACHYDERM_TEST_AMQP_URL", raising=False)
    monkeypatch.setenv("PACHYDERM_APP", "examples.counter:app")
    project.makepyfile(test_counter=USES_WORKER_PROCESSES)
    result = project.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*set PACHYDERM_TEST_DATABASE_URL and PACHYDERM_TEST_AMQP_URL*"])


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_a_user_test_calls_the_app_on_worker_processes(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, postgres_dsn: str, rabbitmq_url: str
) -> None:
    monkeypatch.setenv("PACHYDERM_TEST_DATABASE_URL", postgres_dsn)
    monkeypatch.setenv("PACHYDERM_TEST_AMQP_URL", rabbitmq_url)
    monkeypatch.setenv("PACHYDERM_APP", "examples.counter:app")
    # The worker imports the app from the project's root: here, this repository.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    project.makepyfile(test_counter=USES_WORKER_PROCESSES)
    project.runpytest().assert_outcomes(passed=1)
