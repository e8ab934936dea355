"""The testing kit's projection scenario (given_log): what a plain projection is given
is what the runner gives it, with no database of the test's."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest

from examples import bank_balances
from examples.bank import Account, Deposited, Opened, Withdrawn, account
from examples.counter import Counter, Increased
from pachyderm import (
    App,
    DefinitionError,
    PachydermError,
    Projection,
    ProjectionContext,
    Ref,
    UnknownNameError,
)
from pachyderm.store import event_id
from pachyderm.testing import given_log

APP = App([Account, Counter])
ALICE, BOB = account("alice"), account("bob")
COUNTER = uuid.uuid4()


class Recorder(Projection):
    """Keeps what it is given: each call's batch of (event, context)."""

    name = "recorder"
    events = (Opened, Deposited, Increased)

    def __init__(self) -> None:
        self.batches: list[list[tuple[Any, ProjectionContext]]] = []

    async def apply_many(self, batch: Sequence[tuple[Any, ProjectionContext]]) -> None:
        self.batches.append(list(batch))

    @property
    def given(self) -> list[tuple[Any, ProjectionContext]]:
        return [item for batch in self.batches for item in batch]


class Money(Projection):
    """A read model in memory: the money per account, through apply."""

    name = "money"
    events = (Deposited, Withdrawn)

    def __init__(self) -> None:
        self.money: dict[uuid.UUID, int] = {}

    async def apply(self, event: Any, context: ProjectionContext) -> None:
        sign = 1 if isinstance(event, Deposited) else -1
        self.money[context.entity_id] = self.money.get(context.entity_id, 0) + sign * event.amount


async def test_the_projection_gets_the_contexts_the_runner_fills() -> None:
    recorder = Recorder()
    commits: list[tuple[Ref | uuid.UUID, list[Any]]] = [
        (ALICE, [Opened(owner="alice"), Deposited(amount=10)]),
        (BOB, [Opened(owner="bob")]),
        (COUNTER, [Increased(amount=2)]),  # an id alone: Counter declares Increased
        (ALICE, [Withdrawn(amount=3), Deposited(amount=1)]),  # Withdrawn: not declared
    ]
    projected = await given_log(APP, commits, partitions=2).project(recorder)
    seen = [
        (c.entity_type, c.entity_id, c.version, c.partition, c.position, event)
        for event, c in recorder.given
    ]
    # Entities take the partitions in turn (alice 0, bob 1, the counter 0); each
    # partition's log is in commit order, from 1; versions count per entity.
    assert seen == [
        ("account", ALICE.id, 1, 0, 1, Opened(owner="alice")),
        ("account", ALICE.id, 2, 0, 2, Deposited(amount=10)),
        ("counter", COUNTER, 1, 0, 3, Increased(amount=2)),
        ("account", ALICE.id, 4, 0, 5, Deposited(amount=1)),
        ("account", BOB.id, 1, 1, 1, Opened(owner="bob")),
    ]
    account_type = APP.entity_type("account")
    for event, context in recorder.given:
        assert context.event_id == event_id(context.entity_id, context.version)
        assert context.connection is None
        assert isinstance(context.recorded_at, datetime)
        assert context.recorded_at.tzinfo is not None
        if context.entity_type == "account":
            stored = account_type.encode_event(event)
            assert (context.name, context.data) == (stored.name, stored.data)
    # The cursors stop at each partition's last position, Withdrawn's included.
    assert projected.positions == {0: 5, 1: 1}
    assert [(e.partition, e.position) for e in projected.log] == [
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),
        (0, 5),
        (1, 1),
    ]


async def test_batches_go_through_apply_many_as_the_runner_reads_them() -> None:
    recorder = Recorder()
    histories = {ALICE: [Opened(owner="alice"), Withdrawn(amount=1), Deposited(amount=2)]}
    await given_log(APP, histories).project(recorder, batch_size=2)
    # Reads of two positions: [Opened, Withdrawn] gives Opened alone, then Deposited.
    assert [[event for event, _ in batch] for batch in recorder.batches] == [
        [Opened(owner="alice")],
        [Deposited(amount=2)],
    ]


async def test_then_asserts_the_projections_attributes() -> None:
    histories = {
        ALICE: [Opened(owner="alice"), Deposited(amount=10), Withdrawn(amount=4)],
        BOB: [Opened(owner="bob"), Deposited(amount=5)],
    }
    projected = await given_log(APP, histories, partitions=3).project(Money())
    projected.then(money={ALICE.id: 6, BOB.id: 5})
    with pytest.raises(AssertionError, match="money: expected"):
        projected.then(money={ALICE.id: 10, BOB.id: 5})


async def test_a_failing_apply_fails_the_test() -> None:
    class Failing(Money):
        name = "failing"

        async def apply(self, event: Any, context: ProjectionContext) -> None:
            raise RuntimeError(f"cannot apply {event!r}")

    with pytest.raises(RuntimeError, match="cannot apply"):
        await given_log(APP, {ALICE: [Deposited(amount=1)]}).project(Failing())


async def test_bad_scenarios_get_clear_errors() -> None:
    with pytest.raises(PachydermError, match="give a Ref"):
        given_log(APP, {uuid.uuid4(): []})
    by_name: Any = {"alice": [Opened(owner="alice")]}
    with pytest.raises(PachydermError, match="a Ref or a UUID"):
        given_log(APP, by_name)
    with pytest.raises(UnknownNameError):
        given_log(App([Counter]), {ALICE: [Opened(owner="alice")]})
    with pytest.raises(UnknownNameError):  # a counter has no Opened event
        given_log(APP, {Ref("counter", COUNTER): [Opened(owner="alice")]})
    with pytest.raises(PachydermError, match="partitions"):
        given_log(APP, {}, partitions=0)
    with pytest.raises(PachydermError, match="asyncpg connection or a dsn"):
        await given_log(APP, {}).project(bank_balances.Balances())
    with pytest.raises(PachydermError, match="at least once"):
        await given_log(APP, {}).project(Money(), dsn="postgresql://nowhere")

    class Stranger(Projection):
        name = "stranger"
        events = (Increased,)

        async def apply(self, event: Any, context: ProjectionContext) -> None:
            pass

    # Not registered in the app: checked as the app would check it.
    with pytest.raises(DefinitionError, match="no entity type of the app"):
        await given_log(App([Account]), {}).project(Stranger())
