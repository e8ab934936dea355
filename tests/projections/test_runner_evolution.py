"""The runner over a log written by older (and newer) code: a projection gets what the
current code reads (old names, upcast versions, split and dropped events), and one of
events as stored (the relay) gets every logged event once, as written."""

from __future__ import annotations

import uuid
from typing import Any

from pachyderm import AnyEvent, App, Projection, ProjectionContext, Ref
from pachyderm import _codec as codec
from pachyderm.projections import ProjectionRunner
from pachyderm.store import Change, NewEvent, RecordedEvent

from ..test_upcasting import Account, CityChanged, Deposited
from .conftest import Backend


class Recorder(Projection):
    """Keeps what it is given."""

    def __init__(self) -> None:
        self.applied: list[tuple[Any, ProjectionContext]] = []

    async def apply(self, event: Any, context: ProjectionContext) -> None:
        self.applied.append((event, context))


class Money(Recorder):
    name = "money"
    events = (Deposited,)


class Cities(Recorder):
    name = "cities"
    events = (CityChanged,)


class AsStored(Recorder):
    name = "as_stored"
    events = (AnyEvent,)
    decodes = False


STORED = [  # (name, schema version, data) as older and newer code wrote them
    ("MoneyIn", 1, {"euros": 2}),
    ("AddressChanged", 1, {"street": "Rue Haute", "city": "Ghent"}),
    ("Pinged", 1, {}),
    ("Deposited", 3, {"cents": 5, "note": ""}),
    ("Refunded", 1, {"cents": 1}),  # a type only newer code has
]


async def run(backend: Backend, *projections: Recorder) -> Ref:
    """Commit ``STORED`` to one entity, then one batch of each projection's runner."""
    app = App([Account], projections=projections)
    ref = Ref("account", uuid.uuid4())
    events = tuple(NewEvent(n, codec.encode(d), schema_version=v) for n, v, d in STORED)
    await backend.store.commit([Change(ref, 0, "c1", events, partition=0)])
    for projection in projections:
        await backend.cursors.ensure(projection.name, 1)
        runner = ProjectionRunner(app, backend.store, backend.cursors, projection, 0)
        assert await runner.step() == len(STORED)
    return ref


async def test_a_projection_gets_old_names_upcast_and_split_events(backend: Backend) -> None:
    money, cities = Money(), Cities()
    await run(backend, money, cities)
    assert [event for event, _ in money.applied] == [Deposited(200, "upcast"), Deposited(5)]
    assert [(c.name, c.schema_version) for _, c in money.applied] == [
        ("MoneyIn", 1),
        ("Deposited", 3),
    ]
    assert [event for event, _ in cities.applied] == [CityChanged("Ghent")]


async def test_a_projection_of_stored_events_gets_each_once_as_written(backend: Backend) -> None:
    relay = AsStored()
    ref = await run(backend, relay)
    stored = [(e.name, e.schema_version, codec.decode(e.data)) for e, _ in relay.applied]
    assert stored == STORED
    assert all(isinstance(event, RecordedEvent) for event, _ in relay.applied)
    assert [c.version for _, c in relay.applied] == [1, 2, 3, 4, 5]
    assert {c.entity_id for _, c in relay.applied} == {ref.id}
