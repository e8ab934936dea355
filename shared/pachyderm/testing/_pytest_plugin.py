"""pytest fixtures for testing an app: loaded by pytest itself (the ``pytest11`` entry
point), never by ``import pachyderm.testing``, which works without pytest.

- ``pachyderm_app_spec``: the app as ``module:attribute``, from the ``pachyderm_app``
  ini option, else ``PACHYDERM_APP``; override the fixture to name it in code.
- ``pachyderm_app``: that :class:`~pachyderm.App`; override it to give the App itself
  (an embedded fleet needs no spec, worker processes do).
- ``pachyderm_fleet``: an :class:`~pachyderm.EmbeddedFleet` of the app (SQLite in memory,
  in-process transport), started for the test and stopped after it.
- ``pachyderm_process_fleet``: a :class:`~pachyderm.testing.ProcessFleet` with one
  ``pachyderm worker`` process of the app, in a namespace of the test's own on
  PostgreSQL (``PACHYDERM_TEST_DATABASE_URL``) and RabbitMQ (``PACHYDERM_TEST_AMQP_URL``),
  all removed after it; the test is skipped when either variable is unset.

The last two are async: they need an async test runner, pytest-asyncio (its fixtures
are used when it is installed, so its strict mode runs them too) or anyio's plugin.
Invariant: this module imports no backend; worker-process fleets (asyncpg, aio-pika)
are imported only when a test asks for one.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .. import testing
from .._app import App
from .._embedded import EmbeddedFleet, embedded
from .._loading import load_app

if TYPE_CHECKING:
    from ._fleet import ProcessFleet

APP_OPTION = "pachyderm_app"
APP_VARIABLE = "PACHYDERM_APP"
DATABASE_VARIABLE = "PACHYDERM_TEST_DATABASE_URL"
AMQP_VARIABLE = "PACHYDERM_TEST_AMQP_URL"
# Few partitions: one worker starts serving them all in well under a second.
PROCESS_FLEET_PARTITIONS = 4

AsyncFixture = Callable[..., AsyncIterator[object]]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        APP_OPTION, f"the app the pachyderm fixtures serve (module:attribute); else ${APP_VARIABLE}"
    )


def _async_fixture(function: AsyncFixture) -> object:
    """pytest-asyncio's fixture where it is installed (its strict mode runs only its
    own), else pytest's (for anyio's plugin, which runs any async fixture)."""
    if importlib.util.find_spec("pytest_asyncio") is None:
        return pytest.fixture(function)
    fixture: Callable[[AsyncFixture], object] = importlib.import_module("pytest_asyncio").fixture
    return fixture(function)


@pytest.fixture
def pachyderm_app_spec(request: pytest.FixtureRequest) -> str:
    """The app under test as ``module:attribute`` (the ini option, else the variable)."""
    spec = str(request.config.getini(APP_OPTION) or os.environ.get(APP_VARIABLE, ""))
    if not spec:
        pytest.fail(
            f"which app? set `{APP_OPTION} = module:attribute` in pytest's configuration or"
            f" ${APP_VARIABLE}, or override the pachyderm_app fixture (pachyderm_app_spec"
            " for worker processes)",
            pytrace=False,
        )
    return spec


@pytest.fixture
def pachyderm_app(pachyderm_app_spec: str) -> App:
    """The app under test."""
    return load_app(pachyderm_app_spec)


@_async_fixture
async def pachyderm_fleet(pachyderm_app: App) -> AsyncIterator[EmbeddedFleet]:
    """The app on an embedded fleet; call it with ``pachyderm_fleet.client``."""
    async with embedded(pachyderm_app) as fleet:
        yield fleet


@_async_fixture
async def pachyderm_process_fleet(
    pachyderm_app_spec: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[ProcessFleet]:
    """One worker process of the app, serving every partition of a namespace of the
    test's own; ``async with pachyderm_process_fleet.client()`` calls it, and
    ``pachyderm_process_fleet.settings()`` reaches it (``Client.connect``)."""
    dsn, amqp_url = os.environ.get(DATABASE_VARIABLE), os.environ.get(AMQP_VARIABLE)
    if not dsn or not amqp_url:
        pytest.skip(
            "a process fleet needs PostgreSQL and RabbitMQ:"
            f" set {DATABASE_VARIABLE} and {AMQP_VARIABLE}"
        )
    namespace = f"pachyderm_test_{uuid.uuid4().hex[:12]}"
    async with testing.process_fleet(
        tmp_path,
        namespace,
        dsn,
        amqp_url,
        app=pachyderm_app_spec,
        partitions=PROCESS_FLEET_PARTITIONS,
        # The worker imports the app from the project's root, as the tests do.
        cwd=request.config.rootpath,
    ) as fleet:
        # Port 0: workers of tests running side by side never fight over a health port.
        fleet.start_worker("worker-1", health_port="0")
        await fleet.balanced()
        yield fleet
