"""Fixtures of the TLS tests: throwaway certificates, and private PostgreSQL and
RabbitMQ instances that speak TLS, each started once per module (RabbitMQ takes
a few seconds). If this machine cannot make certificates or start the services,
the tests skip, except in CI (CI=true), where they fail."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from chaos.services import ServiceUnavailableError

from .certificates import OpensslUnavailableError, TlsFiles, make_tls_files
from .services import TlsPostgres, TlsRabbitMQ

T = TypeVar("T")


def _or_skip(start: Callable[[], T]) -> T:
    try:
        return start()
    except (ServiceUnavailableError, OpensslUnavailableError) as error:
        message = f"cannot set up a private TLS service: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def secret() -> str:
    """The services' password: must never show in an error or a log."""
    return f"pw-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    folder: Path = tmp_path_factory.mktemp("tls")
    return _or_skip(lambda: make_tls_files(folder))


@pytest.fixture(scope="module")
def tls_postgres(tls: TlsFiles, secret: str) -> Iterator[TlsPostgres]:
    server = _or_skip(lambda: TlsPostgres(tls.server, secret))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def tls_rabbitmq(tls: TlsFiles, secret: str) -> Iterator[TlsRabbitMQ]:
    server = _or_skip(lambda: TlsRabbitMQ(tls.authority, tls.server, secret))
    try:
        yield server
    finally:
        server.close()
