"""Suspect batches decided beside their partition (in process: SQLite, the in-process
broker): while a redelivered poison's child hangs, the partition's other entities
are answered; the poisoned entity's later commands wait behind it in order, and a
request naming no entity (a repartition fence) waits with everything after it.
The bookkeeping itself (:class:`SuspectRuns`) is tested on its own below."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pachyderm import CommandQuarantinedError, Ref
from pachyderm._errors import StoreError
from pachyderm._wire import ENTITY_TYPE_HEADER, KIND_HEADER, QUERY
from pachyderm.store import Quarantined
from pachyderm.store._sqlite_quarantine import SqliteQuarantine
from pachyderm.transport import Delivery, Message
from pachyderm.worker import PartitionWorker, _engine, _quarantine
from pachyderm.worker._isolation import first_to_die
from pachyderm.worker._quarantine import PartitionQuarantine, _Admission
from pachyderm.worker._suspect_runs import SuspectRun, SuspectRuns
from pachyderm.worker._watchdog import Watchdog

from .poison_app import Lane, Poison, Step
from .test_partition_quarantine import World, switch, world

__all__ = ["switch", "world"]  # the fixtures, shared with the in-process tests

FENCE = Message(
    b"null",
    routing_key="pachyderm.commands.00",
    message_id="fence",
    content_type="application/json",
    headers={KIND_HEADER: QUERY, ENTITY_TYPE_HEADER: "pachyderm.fence"},
)


async def _redelivered_hang(world: World, switch: Path) -> tuple[Ref, str]:
    """A hanging poison whose worker died with it in hand: the next owner decides it in
    a child, which hangs (killed at the limit) twice before it is quarantined."""
    ref = Lane.ref(str(uuid.uuid4()))
    command_id = await world.send(ref, Poison("hang", str(switch)))
    await _die_holding(world, 1)
    return ref, command_id


async def _die_holding(world: World, count: int) -> None:
    """A worker takes the ``count`` commands waiting, then dies with them in hand: the
    broker hands them to the next owner, redelivered."""
    dead = await world.worker()
    assert len(await asyncio.wait_for(dead.inbox.take(100), 2)) == count
    await dead.inbox.close()


async def _owner(world: World, isolation: float = 1.0) -> PartitionWorker:
    owner = await world.worker(isolation=isolation)
    owner.start()
    await asyncio.sleep(0.3)  # the poison's child hangs now
    return owner


async def _answer(world: World, command_id: str, seconds: float = 15) -> Any:
    for _ in range(int(seconds * 100)):
        if command_id in world.replies:
            return world.replies[command_id]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no reply to {command_id}")


async def test_other_entities_flow_while_a_suspect_s_child_hangs(
    world: World, switch: Path
) -> None:
    poisoned, command_id = await _redelivered_hang(world, switch)
    owner = await _owner(world)
    try:
        healthy = await world.send(Lane.ref(str(uuid.uuid4())), Step(1))
        later = await world.send(poisoned, Step(2))
        assert await world.answer(healthy) == (1, {"steps": [1]})
        # Answered while the poison's attempts go on (two children of a second each).
        assert command_id not in world.replies
        answer = await _answer(world, command_id)
        assert isinstance(answer, CommandQuarantinedError)
        assert answer.attempts == 3
        await asyncio.sleep(0.1)
        # Its later command waited behind it, then was parked behind it, not run.
        assert later not in world.replies
        [parked] = await world.quarantine.parked(poisoned.id, 10)
        assert parked.command_id == later
        assert await world.steps(poisoned) == []
    finally:
        await owner.stop()


async def test_a_healthy_command_redelivered_beside_a_poison_does_not_wait_for_its_child(
    world: World, switch: Path
) -> None:
    """Both were in hand when their worker died: each entity's redelivered commands are
    decided in a child of their own, so the healthy one is answered while the poison's
    child still hangs (in one child together, it waited the whole limit, 10 s here)."""
    poisoned = Lane.ref(str(uuid.uuid4()))
    command_id = await world.send(poisoned, Poison("hang", str(switch)))
    healthy_ref = Lane.ref(str(uuid.uuid4()))
    healthy = await world.send(healthy_ref, Step(1))
    await _die_holding(world, 2)
    owner = await _owner(world, isolation=10.0)
    try:
        assert await world.answer(healthy) == (1, {"steps": [1]})
        assert command_id not in world.replies
        assert await world.quarantine.attempts([(healthy_ref.id, healthy)]) == {}
    finally:
        await owner.stop()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The command ids of the attempts counted, in order (once per count)."""
    counted: list[str] = []
    count_attempts = SqliteQuarantine.count_attempts

    async def counting(self: SqliteQuarantine, keys: Sequence[Any]) -> Any:
        counted.extend(command_id for _, command_id in keys)
        return await count_attempts(self, keys)

    monkeypatch.setattr(SqliteQuarantine, "count_attempts", counting)
    return counted


async def test_a_dead_child_counts_the_entity_it_died_deciding_only(
    world: World, switch: Path, monkeypatch: pytest.MonkeyPatch, counted: list[str]
) -> None:
    """Many entities redelivered at once go in batches of several entities: the child
    names the one it died deciding, and only its command is counted (a healthy command
    beside it was counted too, and a third such death quarantined it)."""
    monkeypatch.setattr(_quarantine, "_BY_ENTITY", 0)
    healthy = await world.send(Lane.ref(str(uuid.uuid4())), Step(1))
    poison = await world.send(Lane.ref(str(uuid.uuid4())), Poison("exit", str(switch)))
    await _die_holding(world, 2)
    owner = await _owner(world, isolation=5.0)
    try:
        assert await world.answer(healthy) == (1, {"steps": [1]})
        assert isinstance(await _answer(world, poison), CommandQuarantinedError)
    finally:
        await owner.stop()
    assert counted == [poison, poison]  # its two children's deaths, never the healthy one


@pytest.mark.parametrize("attempts", [2, 3])
async def test_a_healthy_command_behind_a_poison_of_its_entity_is_never_counted(
    world: World, switch: Path, counted: list[str], attempts: int
) -> None:
    """An entity's redelivered commands go in one child, decided one at a time: the child
    names the poison it died deciding, so neither its entity's command decided before it
    nor the one it never reached is counted, and with ``skip`` both are answered (blamed
    with their entity, each was counted beside the poison; with 2 attempts, all three
    were quarantined after the first child's death)."""
    ref = Lane.ref(str(uuid.uuid4()))
    before = await world.send(ref, Step(1))
    poison = await world.send(ref, Poison("exit", str(switch)))
    after = await world.send(ref, Step(2))
    await _die_holding(world, 3)
    owner = await world.worker("skip", isolation=5.0, attempts=attempts)
    owner.start()
    try:
        answer = await _answer(world, poison)
        assert isinstance(answer, CommandQuarantinedError)
        assert answer.attempts == attempts
        assert await _answer(world, before) == (1, {"steps": [1]})
        assert await _answer(world, after) == (2, {"steps": [1, 2]})
    finally:
        await owner.stop()
    assert counted == [poison] * (attempts - 1)  # the first attempt: the dead worker's


async def test_an_entity_s_redelivered_commands_go_in_one_child_however_many(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hot entity's backlog, redelivered: one fork for all of it (a child that dies names
    its command), not one per 16 in sequence, each waiting for the one before."""
    children: list[int] = []

    async def counting(steps: Sequence[Callable[[], object]], limit: float) -> int | None:
        children.append(len(steps))
        return await first_to_die(steps, limit)

    monkeypatch.setattr(_engine, "first_to_die", counting)
    ref = Lane.ref(str(uuid.uuid4()))
    sent = [await world.send(ref, Step(n)) for n in range(20)]
    await _die_holding(world, 20)
    assert await world.live(await world.worker(isolation=5.0))
    answers = [await world.answer(command_id) for command_id in sent]
    assert answers == [(n + 1, {"steps": list(range(n + 1))}) for n in range(20)]
    assert children == [20]


async def test_a_request_naming_no_entity_waits_for_the_suspects_with_all_after_it(
    world: World, switch: Path
) -> None:
    """A repartition fence says that everything before it in its queue is settled: it is
    answered only after the suspect batch before it, and what came after it waits too."""
    _, command_id = await _redelivered_hang(world, switch)
    owner = await _owner(world)
    try:
        before = await world.send(Lane.ref(str(uuid.uuid4())), Step(1))
        await world.transport.publish_command(dataclasses.replace(FENCE, reply_to=world.address))
        after = await world.send(Lane.ref(str(uuid.uuid4())), Step(2))
        assert await world.answer(before) == (1, {"steps": [1]})
        assert command_id not in world.replies
        await _answer(world, "fence")
        assert command_id in world.replies
        assert await world.answer(after) == (1, {"steps": [2]})
    finally:
        await owner.stop()


async def test_stopping_cancels_a_run_and_hands_its_deliveries_back(
    world: World, switch: Path
) -> None:
    poisoned, command_id = await _redelivered_hang(world, switch)
    owner = await _owner(world, isolation=10.0)
    later = await world.send(poisoned, Step(2))
    await asyncio.sleep(0.1)
    await asyncio.wait_for(owner.stop(), 5)  # the child killed, not waited for (10 s)
    assert command_id not in world.replies
    assert later not in world.replies
    successor = await world.worker()
    deliveries = await asyncio.wait_for(successor.inbox.take(100), 2)
    assert [d.message.message_id for d in deliveries] == [command_id, later]
    assert all(d.redelivered for d in deliveries)
    await successor.inbox.close()


# -- the bookkeeping ---------------------------------------------------------------

_tags = iter(range(1, 1_000_000))


def _delivery(entity: uuid.UUID | None) -> Delivery:
    key = "not-an-entity" if entity is None else str(entity)
    return Delivery(Message(b"{}", routing_key=key, message_id=str(next(_tags))), 0, next(_tags))


async def _forever(run: SuspectRun) -> None:
    await asyncio.Event().wait()


async def test_an_entity_s_deliveries_wait_behind_its_run_and_the_others_go() -> None:
    runs = SuspectRuns()
    a, b = uuid.uuid4(), uuid.uuid4()
    suspect = _delivery(a)
    runs.start([suspect], _forever)
    [run] = runs._runs
    first, other, second = _delivery(a), _delivery(b), _delivery(a)
    assert runs.free([first, other, second]) == [other]
    assert runs.aside(suspect)
    assert runs.aside(first)
    assert not runs.aside(other)
    assert runs.finish(run) == [first, second]
    assert not runs.aside(first)
    assert runs.free([_delivery(a)]) != []  # let go
    await runs.stop()
    await asyncio.wait_for(runs.idle(), 1)


async def test_the_barrier_holds_everything_after_it_until_no_run_is_left() -> None:
    runs = SuspectRuns()
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    runs.start([_delivery(a)], _forever)
    runs.start([_delivery(b)], _forever)
    first, second = sorted(runs._runs, key=lambda run: run.batch[0].tag)
    behind_a, fence, fresh, behind_b = _delivery(a), _delivery(None), _delivery(c), _delivery(b)
    assert runs.free([behind_a, fence, fresh, behind_b]) == []
    assert runs.finish(first) == [behind_a]  # a run is left: the barrier stays
    assert runs.finish(second) == [fence, fresh, behind_b]
    assert runs.free([_delivery(None)]) != []  # no run: nothing to wait for
    await runs.stop()


async def test_stored_commands_run_again_are_never_set_aside() -> None:
    runs = SuspectRuns()
    a = uuid.uuid4()
    runs.start([_delivery(a)], _forever)
    stored = dataclasses.replace(_delivery(a), tag=-5)
    assert runs.free([stored]) == [stored]
    await runs.stop()


async def test_after_an_interrupted_batch_each_of_its_commands_goes_alone(
    world: World, switch: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hanging poison's first attempt, in process, is interrupted by the watchdog with
    its batch: the one that hung is among them, so each goes alone into a child next
    (not the whole batch again, whose child would hang too): no child that died held a
    healthy command, and the healthy ones are answered."""
    stalls: list[float] = []
    watching = asyncio.create_task(Watchdog(0.3, on_stall=stalls.append).run())
    poisoned = Lane.ref(str(uuid.uuid4()))
    lanes = [Lane.ref(str(uuid.uuid4())) for _ in range(5)]
    command_id = await world.send(poisoned, Poison("spin", str(switch)))
    healthy = [await world.send(ref, Step(n)) for n, ref in enumerate(lanes)]
    try:
        with caplog.at_level(logging.WARNING, "pachyderm.quarantine"):
            assert await asyncio.wait_for(world.live(await world.worker(isolation=0.5)), 30)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    answer = await world.answer(command_id)
    assert isinstance(answer, CommandQuarantinedError)
    assert [await world.answer(c) for c in healthy] == [(1, {"steps": [n]}) for n in range(5)]
    died = [r.getMessage() for r in caplog.records if "killed or hung the child" in r.getMessage()]
    assert len(died) == 2  # its second and third attempts
    assert all(str(ref.id) not in line for line in died for ref in lanes)


async def test_once_stopped_a_batch_is_set_aside_not_run() -> None:
    runs = SuspectRuns()
    await runs.stop()
    started: list[SuspectRun] = []

    async def record(run: SuspectRun) -> None:
        started.append(run)

    suspect = _delivery(uuid.uuid4())
    runs.start([suspect], record)
    await asyncio.sleep(0)
    assert started == []
    assert runs.aside(suspect)


async def test_a_run_whose_winding_up_fails_lets_its_entity_go(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Winding a run up can fail (the store fenced it and cannot be read, the broker went
    away while replying): the failure is logged as for any batch, and the entity's later
    deliveries are not held behind a run that is over."""
    inbox = await world.transport.open_inbox(0, prefetch=10)
    gate = PartitionQuarantine(inbox, world.quarantine, world.store, world.transport)
    entity = uuid.uuid4()

    async def unreadable() -> list[Quarantined]:
        raise StoreError("PostgreSQL unavailable")

    monkeypatch.setattr(gate, "_reload", unreadable)

    class Failing:
        async def exclusively(self, work: Callable[[], Awaitable[None]]) -> bool:
            await work()
            return True

        async def apply(self, deliveries: Sequence[Delivery]) -> None:
            raise RuntimeError("the broker went away while replying")

    async def decided(batch: Sequence[Delivery], limit: float | None) -> list[Delivery]:
        return list(batch)  # fenced: its entity was parked by another worker

    suspect = _delivery(entity)
    gate.runs.start([suspect], partial(gate._beside, decided, Failing(), 1.0))
    behind = _delivery(entity)
    assert gate.runs.free([behind]) == []
    await asyncio.wait_for(gate.runs.idle(), 5)
    later = _delivery(entity)
    assert gate.runs.free([later]) == [later]
    assert not gate.runs.aside(behind)
    await inbox.close()


def test_isolated_admission_keeps_each_entity_in_batches_of_its_own() -> None:
    """Each entity's order holds, a suspect goes alone with its entity's later ones after
    it, and one addressed to no entity keeps its place: nothing after it joins before."""
    a, b = uuid.uuid4(), uuid.uuid4()
    a1, b1, a2, b2, a3 = (_delivery(e) for e in (a, b, a, b, a))
    fence, a4, b3 = _delivery(None), _delivery(a), _delivery(b)
    admission = _Admission(by_entity=True)
    for delivery in (a1, b1, a2):
        admission.admit(delivery)
    admission.admit(b2, alone=True)
    for delivery in (a3, fence, a4, b3):
        admission.admit(delivery)
    assert admission.batches == [[a1, a2, a3], [b1], [b2], [fence], [a4], [b3]]
