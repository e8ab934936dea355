"""Ending and erasing entities through the engine (SQLite and PostgreSQL stores): an
ended entity answers ``ended`` and is never handled again, whichever worker cached it;
an erased one answers ``erased`` to commands and queries; a rejected first command
creates no entity."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pachyderm import (
    EntityEndedError,
    EntityErasedError,
    HandlerError,
    Ref,
    Reject,
)
from pachyderm._wire import COMMAND, QUERY, Request
from pachyderm.store import (
    ENDED,
    ERASED,
    ERASED_VERSION,
    EventStore,
    PostgresEventStore,
    open_store,
)
from pachyderm.testing import given
from pachyderm.worker import Engine
from pachyderm.worker._partition import _outcome_name

from .membership import APP, Close, Closed, Join, Joined, Membership, Silent, Visit


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[EventStore]:
    if request.param == "sqlite":
        opened: EventStore = await open_store("sqlite:///:memory:")
    else:
        dsn, namespace = (request.getfixturevalue(name) for name in ("postgres_dsn", "namespace"))
        opened = await PostgresEventStore.connect(dsn, schema=namespace, max_size=4)
    await opened.migrate()
    yield opened
    if isinstance(opened, PostgresEventStore):
        await opened.drop_namespace()
    await opened.close()


def request(ref: Ref, message: Any, command_id: str | None = None, kind: str = COMMAND) -> Request:
    return Request(ref, APP.entity_type(ref.type), message, command_id or str(uuid.uuid4()), kind)


def member(key: str = "ann") -> Ref:
    return Membership.ref(key)


async def test_an_ended_entity_answers_ended_and_is_never_handled_again(
    store: EventStore,
) -> None:
    engine = Engine(APP, store)
    ref = member()
    results, _ = await engine.run(
        [
            request(ref, Join(name="ann")),
            request(ref, Close(reason="moved"), "close"),
            request(ref, Visit()),  # same batch, after the end
        ]
    )
    assert results[1].reply == {"name": "ann", "visits": 0, "closed": "moved"}
    assert results[1].version == 2
    assert isinstance(results[2].error, EntityEndedError)
    assert results[2].error.version == 2
    loaded = await store.load(ref)
    assert loaded.ended == ENDED
    assert loaded.version == 2
    assert loaded.snapshot is not None
    assert loaded.snapshot.version == 2  # the final state
    # A later batch, and a fresh engine that loads it: ended, nothing written.
    for runner in (engine, Engine(APP, store)):
        results, committed = await runner.run([request(ref, Visit())])
        assert isinstance(results[0].error, EntityEndedError)
        assert not committed
    # The command that ended it, redelivered, gets its own reply.
    results, _ = await Engine(APP, store).run([request(ref, Close(reason="again"), "close")])
    assert results[0].duplicate
    assert results[0].reply["closed"] == "moved"
    assert [e.name for e in await store.history(ref.id)] == ["Joined", "Closed"]


async def test_queries_read_the_final_state_of_an_ended_entity(store: EventStore) -> None:
    ref = member()
    await Engine(APP, store).run([request(ref, Join(name="ann")), request(ref, Close(reason="x"))])
    results, _ = await Engine(APP, store).run([request(ref, None, kind=QUERY)])
    assert results[0].error is None
    assert results[0].reply == {"name": "ann", "visits": 0, "closed": "x"}


async def test_a_worker_with_a_stale_cache_cannot_apply_to_an_ended_entity(
    store: EventStore,
) -> None:
    stale, ending = Engine(APP, store), Engine(APP, store)
    ref = member()
    await stale.run([request(ref, Join(name="ann"))])
    await ending.run([request(ref, Close(reason="x"))])
    results, committed = await stale.run([request(ref, Visit())])
    assert isinstance(results[0].error, EntityEndedError)
    assert not committed
    assert (await store.load(ref)).version == 2


async def test_an_explicit_reply_and_an_end_without_an_event(store: EventStore) -> None:
    engine = Engine(APP, store)
    bye, empty = Silent.ref("bye"), Silent.ref("empty")
    results, _ = await engine.run(
        [request(bye, Close(reason="r")), request(empty, Close(reason=""))]
    )
    assert results[0].reply == "bye"
    assert (await store.load(bye)).ended == ENDED
    assert isinstance(results[1].error, HandlerError)
    assert "at least one event" in str(results[1].error)
    assert await store.versions([empty.id]) == {}


async def test_an_erased_entity_refuses_commands_and_queries_even_from_a_cache(
    store: EventStore,
) -> None:
    engine = Engine(APP, store)
    ref = member()
    await engine.run([request(ref, Join(name="ann")), request(ref, Visit())])
    erasure = await store.erase(ref)
    assert (erasure.version, erasure.events, erasure.commands) == (2, 2, 2)
    for kind, message in ((COMMAND, Visit()), (QUERY, None)):
        results, committed = await engine.run([request(ref, message, kind=kind)])
        assert isinstance(results[0].error, EntityErasedError), kind
        assert not committed
    loaded = await store.load(ref)
    assert (loaded.ended, loaded.version, loaded.snapshot, list(loaded.events)) == (
        ERASED,
        ERASED_VERSION,
        None,
        [],
    )


async def test_a_rejected_first_command_creates_no_entity_and_keeps_its_answer(
    store: EventStore,
) -> None:
    engine = Engine(APP, store)
    ref = member()
    results, committed = await engine.run([request(ref, Visit(), "v1")])
    assert results[0].rejection == Reject("not_a_member")
    assert len(committed) == 1  # its command id and reply
    assert await store.versions([ref.id]) == {}
    assert (await store.load(ref)).version == 0
    assert await store.list_entities("membership") == []
    # Redelivered, to this worker or another: the same answer, still no entity.
    for runner in (engine, Engine(APP, store)):
        results, _ = await runner.run([request(ref, Visit(), "v1")])
        assert results[0].rejection == Reject("not_a_member")
    assert await store.versions([ref.id]) == {}
    # Its first real command creates it at version 1; the rejection still answers.
    results, _ = await engine.run([request(ref, Join(name="ann")), request(ref, Visit(), "v1")])
    assert results[0].version == 1
    assert results[1].rejection == Reject("not_a_member")
    assert results[1].duplicate
    assert await store.versions([ref.id]) == {ref.id: 1}


async def test_a_rejection_beside_a_creating_command_in_one_batch(store: EventStore) -> None:
    ref = member()
    results, _ = await Engine(APP, store).run(
        [request(ref, Visit()), request(ref, Join(name="ann")), request(ref, Visit())]
    )
    assert results[0].rejection == Reject("not_a_member")
    assert (results[1].version, results[2].version) == (1, 2)


def test_the_testing_kit_ends_an_entity_as_the_fleet_does() -> None:
    closed = (
        given(Membership, Joined(name="ann"))
        .when(Close(reason="moved"))
        .then(events=[Closed(reason="moved")], ended=True)
    )
    assert closed.reply == {"name": "ann", "visits": 0, "closed": "moved"}
    with pytest.raises(EntityEndedError):
        closed.when(Visit())
    given(Membership, Joined(name="ann")).when(Visit()).then(ended=False)


def test_ended_and_erased_answers_are_outcomes_of_their_own() -> None:
    assert _outcome_name(EntityEndedError("x", version=2)) == "ended"
    assert _outcome_name(EntityErasedError("x")) == "erased"
