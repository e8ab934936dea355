"""Shared fixtures: real services come from the environment, else testcontainers.

A test that needs PostgreSQL skips on a developer machine without one, but
fails in CI (CI=true), so a missing service never passes silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from testcontainers.community.postgres import PostgresContainer

# The store contract lives in a helper module; have pytest explain its failures.
pytest.register_assert_rewrite("tests.store.contract")


def _missing_service(what: str) -> None:
    message = f"{what} is not available: set PACHYDERM_TEST_DATABASE_URL or install Docker"
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
        _missing_service("PostgreSQL")
    try:
        container = PostgresContainer("postgres:16-alpine", driver=None).start()
    except Exception as error:  # Docker client present but no engine
        _missing_service(f"PostgreSQL (testcontainers: {error})")
    try:
        yield container.get_connection_url()
    finally:
        container.stop()


@pytest.fixture
def namespace() -> str:
    """A namespace of this test's own, so runs sharing the machine never meet."""
    return f"pachyderm_test_{uuid.uuid4().hex[:12]}"
