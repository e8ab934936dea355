"""The PostgreSQL and RabbitMQ backends load on first use: the embedded mode and
entity tests never import asyncpg, aio-pika or aiormq.

Each check runs in a fresh interpreter, since this process has long imported
them for other tests.
"""

from __future__ import annotations

import pytest

import pachyderm.fleet
import pachyderm.store
import pachyderm.testing
import pachyderm.transport
from pachyderm.fleet import _membership
from pachyderm.store import _postgres
from pachyderm.testing import _fleet
from pachyderm.transport import _rabbitmq

from .python_process import run_python

LOADED_BACKENDS = """
import sys
print(sorted({"asyncpg", "aio_pika", "aiormq"} & set(sys.modules)))
"""

EMBEDDED = """
import asyncio
import pachyderm, pachyderm.fleet, pachyderm.store, pachyderm.transport
import pachyderm.testing, pachyderm.worker, pachyderm.telemetry
from pachyderm.testing import given
from examples import counter


given(counter.Counter).when(counter.Increment(amount=2)).then(events=[counter.Increased(2)])

async def main():
    async with pachyderm.embedded(counter.app) as fleet:
        ref = counter.Counter.ref("lazy")
        assert await fleet.client.call(ref, counter.Increment(amount=11)) == {"count": 11}

asyncio.run(main())
"""


def loaded_backends(code: str) -> str:
    """The backend libraries loaded after running ``code`` in a fresh interpreter."""
    finished = run_python("-c", code + LOADED_BACKENDS)
    assert finished.returncode == 0, finished.stderr
    return finished.stdout.strip().splitlines()[-1]


def test_importing_pachyderm_loads_no_backend_library() -> None:
    assert loaded_backends("import pachyderm") == "[]"


def test_the_embedded_mode_and_the_testing_kit_load_no_backend_library() -> None:
    assert loaded_backends(EMBEDDED) == "[]"


@pytest.mark.parametrize(
    ("name", "libraries"),
    [
        ("pachyderm.store.PostgresEventStore", "['asyncpg']"),
        ("pachyderm.fleet.PostgresMembership", "['asyncpg']"),
        ("pachyderm.transport.RabbitMQTransport", "['aio_pika', 'aiormq']"),
    ],
)
def test_a_backend_loads_its_library_when_first_used(name: str, libraries: str) -> None:
    package, attribute = name.rsplit(".", 1)
    assert loaded_backends(f"import {package}\n{package}.{attribute}") == libraries


def test_a_lazy_name_is_the_class_its_module_defines() -> None:
    assert pachyderm.store.PostgresEventStore is _postgres.PostgresEventStore
    assert pachyderm.fleet.PostgresMembership is _membership.PostgresMembership
    assert pachyderm.transport.RabbitMQTransport is _rabbitmq.RabbitMQTransport
    assert pachyderm.testing.process_fleet is _fleet.process_fleet


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = pachyderm.store.Nothing  # type: ignore[attr-defined]
