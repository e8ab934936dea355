"""A worker meeting an event newer than its code counts it, by entity type."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from pachyderm import App, NewerSchemaError
from pachyderm._wire import COMMAND, Request
from pachyderm.store import EventStore, open_store
from pachyderm.telemetry import TelemetryHooks
from pachyderm.worker import Engine

from ..integration import tally_v1, tally_v2
from .conftest import Recorded

V1, V2 = App([tally_v1.Tally]), App([tally_v2.Tally])


@pytest.fixture
async def store() -> AsyncIterator[EventStore]:
    store = await open_store("sqlite:///:memory:")
    await store.migrate()
    yield store
    await store.close()


async def test_an_entity_left_for_newer_code_is_counted(
    store: EventStore, recorded: Recorded
) -> None:
    ref = tally_v1.Tally.ref("evolved")
    await Engine(V2, store).run([Request(ref, V2.entity_type("tally"), tally_v2.Add(1), "c1")])
    old = Engine(V1, store, hooks=TelemetryHooks())
    results, _ = await old.run(
        [Request(ref, V1.entity_type("tally"), tally_v1.Add(2), str(uuid.uuid4()), COMMAND)]
    )
    assert isinstance(results[0].error, NewerSchemaError)
    assert recorded.total("pachyderm.newer_schema", entity_type="tally") == 1
