"""Shared fixtures: real services come from the environment, else testcontainers.

A test that needs PostgreSQL skips on a developer machine without one, but
fails in CI (CI=true), so a missing service never passes silently.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator

import pytest
from hypothesis import settings
from testcontainers.community.postgres import PostgresContainer

# The package's pytest plugin (its fixtures for an app's tests), as a user gets it from
# the entry point; loaded here, after coverage starts (pyproject.toml: -p no:pachyderm).
pytest_plugins = ("pachyderm.testing._pytest_plugin",)

# The contract suites live in the package; have pytest explain their failures
# (pachyderm.testing asks for it too, but only when its names are looked up).
pytest.register_assert_rewrite(
    "pachyderm.testing._store_contract", "pachyderm.testing._transport_contract"
)

# The suite's property tests try the same examples on every run, so that CI
# is repeatable; HYPOTHESIS_PROFILE=explore draws new ones, to hunt for bugs.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def _missing_service(what: str, variable: str) -> None:
    message = f"{what} is not available: set {variable} or install Docker"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _docker_engine_reachable() -> bool:
    return bool(os.environ.get("DOCKER_HOST")) or os.path.exists("/var/run/docker.sock")


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A PostgreSQL DSN: PACHYDERM_TEST_DATABASE_URL, else a throwaway container."""
    dsn = os.environ.get("PACHYDERM_TEST_DATABASE_URL")
    if dsn:
        yield dsn
        return
    if not _docker_engine_reachable():
        _missing_service("PostgreSQL", "PACHYDERM_TEST_DATABASE_URL")
    try:
        container = PostgresContainer("postgres:16-alpine", driver=None).start()
    except Exception as error:  # Docker client present but no engine
        _missing_service(f"PostgreSQL (testcontainers: {error})", "PACHYDERM_TEST_DATABASE_URL")
    try:
        yield container.get_connection_url()
    finally:
        container.stop()


@pytest.fixture
def namespace() -> str:
    """A namespace of this test's own, so runs sharing the machine never meet."""
    return f"pachyderm_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """An AMQP URL: PACHYDERM_TEST_AMQP_URL, else a throwaway container."""
    url = os.environ.get("PACHYDERM_TEST_AMQP_URL")
    if url:
        yield url
        return
    if not _docker_engine_reachable():
        _missing_service("RabbitMQ", "PACHYDERM_TEST_AMQP_URL")
    with warnings.catch_warnings():
        # The module applies a decorator testcontainers itself deprecates.
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.community.rabbitmq import RabbitMqContainer  # noqa: PLC0415
    try:
        container = RabbitMqContainer("rabbitmq:3.13-alpine").start()
    except Exception as error:  # Docker client present but no engine
        _missing_service(f"RabbitMQ (testcontainers: {error})", "PACHYDERM_TEST_AMQP_URL")
    try:
        # Commands are spread by the consistent-hash exchange, a plugin.
        plugin = ["rabbitmq-plugins", "enable", "rabbitmq_consistent_hash_exchange"]
        exit_code, output = container.exec(plugin)
        if exit_code != 0:
            raise RuntimeError(f"enabling the plugin failed: {output!r}")
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        yield f"amqp://{container.username}:{container.password}@{host}:{port}/"
    finally:
        container.stop()
