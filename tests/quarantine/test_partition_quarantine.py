"""Poison commands in one partition, in process (SQLite, the in-process broker): a
command whose handler takes its worker down is counted on each redelivery, then
quarantined and answered ``quarantined``; its entity's later commands are parked
in order while the partition's other entities flow; resume and skip release them."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pachyderm import CommandQuarantinedError, Ref
from pachyderm._stored_messages import decode_message, encode_message
from pachyderm._wire import ENTITY_TYPE_HEADER, KIND_HEADER, QUERY, command_message, read_reply
from pachyderm.store import (
    HasQuarantine,
    Parked,
    Quarantined,
    QuarantineStore,
    SqliteEventStore,
    StoredTimer,
)
from pachyderm.store._quarantine import CommandKey
from pachyderm.store._sqlite_quarantine import SqliteQuarantine
from pachyderm.transport import InProcessTransport, Message, Topology
from pachyderm.worker import (
    EffectPublisher,
    Engine,
    PartitionWorker,
    QuarantineOptions,
    WorkerHooks,
)
from pachyderm.worker._engine import Done
from pachyderm.worker._firing import fire_request
from pachyderm.worker._quarantine import PartitionQuarantine, Turns, _Admission
from pachyderm.worker._timers import RateLimit, TimerFiring, TimerOptions
from pachyderm.worker._watchdog import Watchdog

from .poison_app import APP, Arm, Crash, Lane, Poison, Step


class Recording(WorkerHooks):
    def __init__(self) -> None:
        self.quarantines: list[tuple[str, str]] = []

    def quarantined(self, entity_type: str, policy: str) -> None:
        self.quarantines.append((entity_type, policy))


@dataclass
class World:
    store: SqliteEventStore
    transport: InProcessTransport
    address: str
    replies: dict[str, Any] = field(default_factory=dict)
    hooks: Recording = field(default_factory=Recording)

    @property
    def quarantine(self) -> QuarantineStore:
        assert isinstance(self.store, HasQuarantine)
        return self.store.quarantine_store()

    async def send(self, ref: Ref, command: object, command_id: str | None = None) -> str:
        message = command_message(APP, ref, command, command_id=command_id)
        message = dataclasses.replace(message, reply_to=self.address)
        await self.transport.publish_command(message)
        assert message.message_id is not None
        return message.message_id

    async def worker(
        self, policy: str = "park", isolation: float | None = None, attempts: int = 3
    ) -> PartitionWorker:
        """A new worker's partition (a fresh engine: nothing cached); ``isolation`` and
        ``attempts`` (its ``max_attempts``): see :class:`QuarantineOptions` (no isolation
        by default: these tests count the worker's deaths)."""
        inbox = await self.transport.open_inbox(0, prefetch=100)
        options = QuarantineOptions(
            attempts, "park" if policy == "park" else "skip", poll=0.02, isolation=isolation
        )
        gate = PartitionQuarantine(
            inbox, self.quarantine, self.store, self.transport, options, hooks=self.hooks
        )
        engine = Engine(APP, self.store)
        effects = EffectPublisher(self.store, self.transport)
        return PartitionWorker(gate, APP, engine, self.transport, effects, quarantine=gate)

    async def live(self, partition: PartitionWorker) -> bool:
        """Handle what is waiting; False if a handler took the worker down (its inbox is
        then closed unsettled, as a broker does when a consumer's connection drops)."""
        deliveries = await asyncio.wait_for(partition.inbox.take(100), 2)
        try:
            await partition.handle(deliveries)
        except Crash:
            await partition.inbox.close()
            return False
        assert partition.quarantine is not None
        await partition.quarantine.runs.idle()  # suspect batches decided beside it
        return True

    async def answer(self, command_id: str) -> Any:
        for _ in range(200):
            if command_id in self.replies:
                return self.replies[command_id]
            await asyncio.sleep(0.01)
        raise AssertionError(f"no reply to {command_id}")

    async def steps(self, ref: Ref) -> list[int]:
        loaded = await APP.entity_type(ref.type).load(self.store, ref)
        return list(loaded.state["steps"])


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store = await SqliteEventStore.open(":memory:")
    await store.migrate()
    transport = InProcessTransport(Topology(partitions=1))
    await transport.start()
    replies: dict[str, Any] = {}

    async def collect(message: Message) -> None:
        try:
            replies[message.correlation_id or ""] = read_reply(message)
        except Exception as error:
            replies[message.correlation_id or ""] = error

    address = await transport.listen_replies(collect)
    yield World(store, transport, address, replies)
    await transport.close()
    await store.close()


@pytest.fixture
def switch(tmp_path: Path) -> Path:
    """While this file exists, poison commands misbehave."""
    path = tmp_path / "poisoned"
    path.touch()
    return path


async def poison(world: World, ref: Ref, switch: Path, policy: str = "park") -> str:
    """Send a crashing command to ``ref`` and let it take 3 workers down."""
    command_id = await world.send(ref, Poison("crash", str(switch)))
    for _ in range(3):
        assert not await world.live(await world.worker(policy))
    return command_id


async def test_a_command_that_takes_its_worker_down_is_quarantined_after_its_attempts(
    world: World, switch: Path
) -> None:
    ref = Lane.ref(str(uuid.uuid4()))
    command_id = await poison(world, ref, switch)
    # The 4th delivery: counted the 3rd time redelivered, quarantined, never run.
    assert await world.live(await world.worker())
    answer = await world.answer(command_id)
    assert isinstance(answer, CommandQuarantinedError)
    assert answer.attempts == 3
    [row] = await world.quarantine.quarantined()
    assert (row.entity_id, row.command_id, row.entity_type) == (ref.id, command_id, "lane")
    assert (row.status, row.policy, row.attempts, row.partition) == ("quarantined", "park", 3, 0)
    assert decode_message(row.message).message_id == command_id
    assert world.hooks.quarantines == [("lane", "park")]
    assert await world.steps(ref) == []


async def test_a_hanging_handler_is_interrupted_and_quarantined_by_a_worker_that_lives_on(
    world: World, switch: Path
) -> None:
    """The watchdog interrupts each attempt at the budget (see pachyderm.worker.
    _interruption): the worker counts it and goes on, and the poison is quarantined
    after its attempts; the command beside it is answered, the one behind it parked."""
    stalls: list[float] = []
    watching = asyncio.create_task(Watchdog(0.3, on_stall=stalls.append).run())
    ref, other = Lane.ref(str(uuid.uuid4())), Lane.ref(str(uuid.uuid4()))
    command_id = await world.send(ref, Poison("spin", str(switch)))
    healthy = await world.send(other, Step(1))
    later = await world.send(ref, Step(2))
    try:
        # One worker, every attempt (bounded: attempts that were not counted would go on).
        assert await asyncio.wait_for(world.live(await world.worker()), 30)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    assert stalls == []  # interrupted each time, never given up on
    answer = await world.answer(command_id)
    assert isinstance(answer, CommandQuarantinedError)
    assert answer.attempts == 3
    assert await world.answer(healthy) == (1, {"steps": [1]})
    assert later not in world.replies
    assert await world.steps(ref) == []


async def test_a_parked_entity_waits_in_order_while_the_others_flow_then_skip_releases_it(
    world: World, switch: Path
) -> None:
    ref, other = Lane.ref(str(uuid.uuid4())), Lane.ref(str(uuid.uuid4()))
    command_id = await poison(world, ref, switch)
    later = [await world.send(ref, Step(n)) for n in (1, 2, 3)]
    flowing = await world.send(other, Step(7))
    partition = await world.worker()
    assert await world.live(partition)
    assert isinstance(await world.answer(command_id), CommandQuarantinedError)
    assert await world.answer(flowing) == (1, {"steps": [7]})
    assert await world.steps(ref) == []  # parked, not applied
    # A query reads the parked entity at once.
    query = command_message(APP, ref, None, kind=QUERY)
    await world.transport.publish_command(dataclasses.replace(query, reply_to=world.address))
    assert await world.live(partition)
    assert await world.answer(query.message_id or "") == (0, {"steps": []})
    assert all(command not in world.replies for command in later)
    [row] = await world.quarantine.quarantined()
    assert row.parked == 3
    # A retry of a parked command keeps its place; the quarantined one is refused again.
    await world.send(ref, Step(2), command_id=later[1])
    del world.replies[command_id]
    retried = await world.send(ref, Poison("crash", str(switch)), command_id=command_id)
    assert await world.live(partition)
    assert isinstance(await world.answer(retried), CommandQuarantinedError)
    found = await world.quarantine.find(ref.id, command_id)
    assert found is not None
    assert found.parked == 3

    await world.quarantine.decide(ref.id, command_id, "skip")
    partition.start()
    try:
        assert [await world.answer(c) for c in later] == [
            (1, {"steps": [1]}),
            (2, {"steps": [1, 2]}),
            (3, {"steps": [1, 2, 3]}),
        ]
        await world.send(ref, Step(4))
        await asyncio.sleep(0.2)
        assert await world.steps(ref) == [1, 2, 3, 4]
    finally:
        await partition.stop()
    skipped = await world.quarantine.find(ref.id, command_id)
    assert skipped is not None
    assert (skipped.status, skipped.parked) == ("skipped", 0)


async def test_a_parked_copy_of_a_skipped_command_is_answered_quarantined_not_run(
    world: World, switch: Path
) -> None:
    """A caller's retry of the poison, parked where the view did not refuse it yet (the
    partition that parked it had not read the quarantine: an entity served by two
    partitions after a broker restart), is answered ``quarantined`` when the skip
    releases it. Run, it was decided in the worker's process, uncounted (its key was
    refused): a hanging poison was interrupted and run again every budget, for good."""
    ref = Lane.ref(str(uuid.uuid4()))
    command_id = await poison(world, ref, switch)
    partition = await world.worker()
    assert await world.live(partition)
    assert isinstance(await world.answer(command_id), CommandQuarantinedError)
    del world.replies[command_id]
    copy = command_message(APP, ref, Poison("crash", str(switch)), command_id=command_id)
    copy = dataclasses.replace(copy, reply_to=world.address)
    await world.quarantine.park([Parked(ref.id, command_id, encode_message(copy))])
    later = await world.send(ref, Step(1))
    assert await world.live(partition)  # parked behind it
    os.remove(switch)  # run, the copy would now apply (a step of -1)
    await world.quarantine.decide(ref.id, command_id, "skip")
    partition.start()
    try:
        assert await world.answer(later) == (1, {"steps": [1]})
    finally:
        await partition.stop()
    assert isinstance(world.replies[command_id], CommandQuarantinedError)
    assert await world.steps(ref) == [1]
    assert not await world.quarantine.parked(ref.id, 10)


async def test_commands_a_former_owner_parked_after_the_skip_are_released_in_order(
    world: World, switch: Path
) -> None:
    """While a partition moves, its former owner still consumes with its old view: it
    parks the entity's commands after the new owner carried the skip out. The owner
    releases them, and the entity's newer commands wait behind them."""
    ref = Lane.ref(str(uuid.uuid4()))
    command_id = await poison(world, ref, switch)
    former = await world.worker()
    assert await world.live(former)  # its view: the entity parked
    await world.quarantine.decide(ref.id, command_id, "skip")
    await world.quarantine.settle(ref.id, command_id)  # the new owner carried it out
    late = [await world.send(ref, Step(n)) for n in (1, 2)]
    assert await world.live(former)
    assert await world.steps(ref) == []
    await former.inbox.close()  # the partition has moved on
    newer = await world.send(ref, Step(3))
    owner = await world.worker()
    owner.start()
    try:
        assert [await world.answer(c) for c in [*late, newer]] == [
            (1, {"steps": [1]}),
            (2, {"steps": [1, 2]}),
            (3, {"steps": [1, 2, 3]}),
        ]
        # Answered before their rows are tidied: stopping now could leave them for the
        # next owner (which would answer them again from their stored replies).
        skipped = await world.quarantine.find(ref.id, command_id)
        for _ in range(200):
            if skipped is None or skipped.parked == 0:
                break
            await asyncio.sleep(0.01)
            skipped = await world.quarantine.find(ref.id, command_id)
    finally:
        await owner.stop()
    assert skipped is not None
    assert (skipped.status, skipped.parked) == ("skipped", 0)


async def test_resume_runs_the_command_then_the_parked_ones(world: World, switch: Path) -> None:
    ref = Lane.ref(str(uuid.uuid4()))
    command_id = await poison(world, ref, switch)
    later = await world.send(ref, Step(1))
    assert await world.live(await world.worker())  # quarantined, and the step parked
    os.remove(switch)  # the fix is deployed
    await world.quarantine.decide(ref.id, command_id, "resume")
    partition = await world.worker()  # a new owner: the quarantine is in the database
    partition.start()
    try:
        assert await world.answer(later) == (2, {"steps": [-1, 1]})
        for _ in range(100):  # settled once its parked commands ran
            if not await world.quarantine.quarantined():
                break
            await asyncio.sleep(0.02)
    finally:
        await partition.stop()
    assert await world.steps(ref) == [-1, 1]
    assert await world.quarantine.quarantined() == []


async def test_a_parked_entity_s_timers_wait_until_it_is_released(
    world: World, switch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timer falling due while its entity is parked waits, uncounted, as the entity's
    commands do; once released it fires, after the parked commands."""
    ref = Lane.ref(str(uuid.uuid4()))
    benign = Poison("crash", str(tmp_path / "never-there"))  # applies: records -1
    armed = await world.send(ref, Arm(benign, 0.3))
    assert await world.live(await world.worker())
    assert await world.answer(armed) == (1, {"steps": [0]})
    command_id = await poison(world, ref, switch)
    later = await world.send(ref, Step(1))
    partition = await world.worker()
    assert await world.live(partition)  # quarantined, and the step parked
    await asyncio.sleep(0.4)  # the timer is due
    assert isinstance(partition.quarantine, PartitionQuarantine)
    timers = TimerFiring(
        0,
        APP,
        world.store,
        partition.fire,
        limit=RateLimit(1_000),
        options=TimerOptions(),
        hooks=world.hooks,
        parking=partition.quarantine,
    )
    reads = 0
    due_timers = world.store.due_timers

    async def counted(
        partition: int, until: datetime, limit: int, *, skip: Collection[uuid.UUID] = ()
    ) -> list[StoredTimer]:
        nonlocal reads
        reads += 1
        return await due_timers(partition, until, limit, skip=skip)

    monkeypatch.setattr(world.store, "due_timers", counted)
    partition.start(timers)
    try:
        await asyncio.sleep(0.5)
        assert await world.steps(ref) == [0]
        assert reads <= 3  # read again with the read-ahead, not in a loop
        [timer] = await world.store.entity_timers(ref.id)
        assert timer.attempts == 0  # waiting is not an attempt

        await world.quarantine.decide(ref.id, command_id, "skip")
        assert await world.answer(later) == (2, {"steps": [0, 1]})
        for _ in range(200):
            if await world.steps(ref) == [0, 1, -1]:
                break
            await asyncio.sleep(0.02)
    finally:
        await partition.stop()
    assert await world.steps(ref) == [0, 1, -1]
    assert await world.store.entity_timers(ref.id) == []


async def test_a_quarantine_waits_for_its_entity_s_fire_in_flight_and_stops_later_ones(
    world: World, switch: Path, tmp_path: Path
) -> None:
    """A fire decided before its entity was parked commits before the quarantine is
    recorded; one that starts after is left pending (the timers' own read may predate
    the quarantine)."""
    ref = Lane.ref(str(uuid.uuid4()))
    armed = await world.send(ref, Arm(Poison("crash", str(tmp_path / "never-there")), 0.01))
    assert await world.live(await world.worker())
    assert await world.answer(armed) == (1, {"steps": [0]})
    command_id = await poison(world, ref, switch)
    partition = await world.worker()
    assert isinstance(partition.quarantine, PartitionQuarantine)
    async with partition.quarantine.turns.holding([ref]):  # as a fire in flight does
        live = asyncio.create_task(world.live(partition))
        await asyncio.sleep(0.2)
        assert not live.done()
        assert await world.quarantine.quarantined() == []
    assert await live
    assert [row.command_id for row in await world.quarantine.quarantined()] == [command_id]

    [timer] = await world.store.entity_timers(ref.id)
    fire = fire_request(APP, timer, datetime.now(UTC))
    assert await partition.fire([fire]) == [Done(gone=True)]
    assert await world.steps(ref) == [0]
    assert await world.store.entity_timers(ref.id) == [timer]


def _parked_elsewhere(ref: Ref) -> Quarantined:
    """The quarantine row another worker (the partition's new owner) wrote for ``ref``."""
    message = encode_message(command_message(APP, ref, Step(-9), command_id="poison"))
    return Quarantined(ref.id, "poison", "lane", 0, "park", "quarantined", 3, "hung", message)


async def test_a_former_owner_s_command_to_an_entity_parked_meanwhile_is_fenced_and_parked(
    world: World,
) -> None:
    """The former owner's view predates the park: the store fences its commit, and the
    command is parked in its turn (stored, acknowledged, unanswered) instead of applied."""
    ref, other = Lane.ref(str(uuid.uuid4())), Lane.ref(str(uuid.uuid4()))
    former = await world.worker()
    first = await world.send(ref, Step(1))
    assert await world.live(former)  # it read the quarantine: nothing parked
    assert await world.answer(first) == (1, {"steps": [1]})
    await world.quarantine.quarantine([_parked_elsewhere(ref)])
    later = await world.send(ref, Step(2))
    beside = await world.send(other, Step(5))
    assert await world.live(former)
    assert await world.answer(beside) == (1, {"steps": [5]})
    assert await world.steps(ref) == [1]
    assert later not in world.replies
    assert [p.command_id for p in await world.quarantine.parked(ref.id, 10)] == [later]
    assert isinstance(former.quarantine, PartitionQuarantine)
    assert former.quarantine.parked(ref.id)
    newer = await world.send(ref, Step(3))  # parked by the view now, no fence needed
    assert await world.live(former)
    assert [p.command_id for p in await world.quarantine.parked(ref.id, 10)] == [later, newer]

    await world.quarantine.decide(ref.id, "poison", "skip")
    former.start()
    try:
        assert await world.answer(newer) == (3, {"steps": [1, 2, 3]})
    finally:
        await former.stop()
    assert await world.answer(later) == (2, {"steps": [1, 2]})


async def test_a_former_owner_s_fire_for_an_entity_parked_meanwhile_is_left_pending(
    world: World, tmp_path: Path
) -> None:
    ref = Lane.ref(str(uuid.uuid4()))
    armed = await world.send(ref, Arm(Poison("crash", str(tmp_path / "never-there")), 0.01))
    former = await world.worker()
    assert await world.live(former)
    assert await world.answer(armed) == (1, {"steps": [0]})
    await world.quarantine.quarantine([_parked_elsewhere(ref)])
    await asyncio.sleep(0.05)
    [timer] = await world.store.entity_timers(ref.id)
    assert isinstance(former.quarantine, PartitionQuarantine)
    assert not former.quarantine.parked(ref.id)  # its view is old
    fire = fire_request(APP, timer, datetime.now(UTC))
    assert await former.fire([fire]) == [Done(gone=True)]
    assert await world.steps(ref) == [0]
    assert await world.store.entity_timers(ref.id) == [timer]
    former.start()  # its watch reads the quarantine at once
    try:
        for _ in range(100):
            if former.quarantine.parked(ref.id):
                break
            await asyncio.sleep(0.01)
        assert former.quarantine.parked(ref.id)
    finally:
        await former.stop()


async def test_a_quarantined_command_naming_no_entity_type_is_recorded(world: World) -> None:
    """Its type header is the publisher's to send: one that names no type (missing, or not
    a type name) still parks its entity id (no timer of it can fire to wait for)."""
    partition = await world.worker()
    assert isinstance(partition.quarantine, PartitionQuarantine)
    entity_id = uuid.uuid4()
    admission = _Admission()
    admission.quarantined.append(
        Quarantined(entity_id, "c-1", "", 0, "park", "quarantined", 3, "crashed", b"{}")
    )
    await partition.quarantine._record(admission)
    [row] = await world.quarantine.quarantined()
    assert (row.entity_id, row.entity_type, row.status) == (entity_id, "", "quarantined")


async def test_a_poison_timer_kills_forked_children_not_its_owner(
    world: World, switch: Path
) -> None:
    """A risky fire (its timer fell due before this owner began firing) is decided in a
    forked child first: a timer whose command ends its process ends three children,
    then is held, and the owner lives on (without isolation, this test's process would
    end)."""
    ref = Lane.ref(str(uuid.uuid4()))
    armed = await world.send(ref, Arm(Poison("exit", str(switch)), 0.01))
    assert await world.live(await world.worker())
    assert await world.answer(armed) == (1, {"steps": [0]})
    await asyncio.sleep(0.05)  # due before the owner below begins: risky
    partition = await world.worker()
    timers = TimerFiring(
        0,
        APP,
        world.store,
        partition.fire,
        limit=RateLimit(1_000),
        options=TimerOptions(poll=0.05, read_ahead=0.05),
        hooks=world.hooks,
        max_attempts=3,
        isolation=5.0,
    )
    partition.start(timers)
    try:
        for _ in range(300):
            found = await world.store.entity_timers(ref.id)
            if found and found[0].held:
                break
            await asyncio.sleep(0.05)
    finally:
        await partition.stop()
    [timer] = await world.store.entity_timers(ref.id)
    assert timer.held
    assert timer.attempts == 2  # and the former owner's try: three in all
    assert world.hooks.quarantines == [("lane", "hold")]
    assert await world.steps(ref) == [0]


async def test_a_resumed_command_that_still_fails_is_quarantined_again(
    world: World, switch: Path
) -> None:
    ref = Lane.ref(str(uuid.uuid4()))
    command_id = await poison(world, ref, switch)
    later = await world.send(ref, Step(1))
    assert await world.live(await world.worker())
    await world.quarantine.decide(ref.id, command_id, "resume")
    for _ in range(3):  # its attempts start over: each try crashes a worker
        partition = await world.worker()
        assert partition.quarantine is not None
        [row] = await world.quarantine.quarantined()
        with pytest.raises(Crash):
            await partition.quarantine.carry_out(row, partition)
        await partition.inbox.close()
    partition = await world.worker()
    assert partition.quarantine is not None
    [row] = await world.quarantine.quarantined()
    assert row.status == "resuming"
    assert await partition.quarantine.carry_out(row, partition)
    [row] = await world.quarantine.quarantined()
    assert (row.status, row.parked) == ("quarantined", 1)
    assert later not in world.replies
    assert await world.steps(ref) == []


async def test_skip_policy_lets_the_entity_go_on(world: World, switch: Path) -> None:
    ref = Lane.ref(str(uuid.uuid4()))
    command_id = await poison(world, ref, switch, policy="skip")
    later = await world.send(ref, Step(1))
    assert await world.live(await world.worker("skip"))
    assert isinstance(await world.answer(command_id), CommandQuarantinedError)
    assert await world.answer(later) == (1, {"steps": [1]})
    os.remove(switch)
    await world.quarantine.decide(ref.id, command_id, "resume")
    partition = await world.worker("skip")
    partition.start()
    try:
        for _ in range(100):
            if await world.steps(ref) == [1, -1]:
                break
            await asyncio.sleep(0.02)
    finally:
        await partition.stop()
    assert await world.steps(ref) == [1, -1]


class Counting(SqliteQuarantine):
    """The quarantine, with its attempt counts written down."""

    counted: list[int]

    async def count_attempts(self, keys: Sequence[CommandKey]) -> dict[CommandKey, int]:
        self.counted.append(len(keys))
        return await super().count_attempts(keys)


async def test_first_deliveries_cost_no_statement(world: World) -> None:
    quarantine = Counting(world.store)
    quarantine.counted = []
    inbox = await world.transport.open_inbox(0, prefetch=100)
    gate = PartitionQuarantine(inbox, quarantine, world.store, world.transport)
    partition = PartitionWorker(
        gate,
        APP,
        Engine(APP, world.store),
        world.transport,
        EffectPublisher(world.store, world.transport),
        quarantine=gate,
    )
    sent = [await world.send(Lane.ref(str(uuid.uuid4())), Step(n)) for n in range(20)]
    assert await world.live(partition)
    assert [await world.answer(c) for c in sent] == [(1, {"steps": [n]}) for n in range(20)]
    assert quarantine.counted == []


def test_a_stored_message_reads_back_as_received() -> None:
    message = Message(
        b"body",
        routing_key=str(uuid.uuid4()),
        message_id="m",
        correlation_id="c",
        reply_to="r",
        content_type="application/msgpack",
        type="Step",
        headers={"pachyderm-entity-type": "lane", "n": 1, "odd": object()},
    )
    stored = decode_message(encode_message(message))
    assert stored == dataclasses.replace(message, headers={"pachyderm-entity-type": "lane", "n": 1})


async def test_commands_batched_with_a_poison_are_answered_not_quarantined(
    world: World, switch: Path
) -> None:
    before = [await world.send(Lane.ref(str(uuid.uuid4())), Step(n)) for n in range(3)]
    command_id = await world.send(Lane.ref(str(uuid.uuid4())), Poison("crash", str(switch)))
    after = [await world.send(Lane.ref(str(uuid.uuid4())), Step(n)) for n in range(3)]
    lives = 0
    while not await world.live(await world.worker()):
        lives += 1
        assert lives <= 3
    assert lives == 3  # the poison's 3 attempts; the others ran alone once suspected
    assert isinstance(await world.answer(command_id), CommandQuarantinedError)
    for n, sent in enumerate(before + after):
        assert await world.answer(sent) == (1, {"steps": [n % 3]})
    assert [row.command_id for row in await world.quarantine.quarantined()] == [command_id]


async def test_an_attempt_the_worker_survives_is_not_counted_against_the_command(
    world: World,
) -> None:
    """A delivery left unsettled on purpose (for a newer worker, in a rolling deploy) and
    handed back again and again is never quarantined."""
    ref = Lane.ref(str(uuid.uuid4()))
    command_id = await world.send(ref, Step(1))
    for _ in range(5):
        partition = await world.worker()
        assert partition.quarantine is not None
        deliveries = await asyncio.wait_for(partition.inbox.take(10), 2)
        for batch in await partition.quarantine.admit(deliveries):
            async with partition.quarantine.attempt(batch):
                pass  # decided on, not settled: as a held delivery
        await partition.inbox.close()  # handed back, redelivered
    assert await world.quarantine.quarantined() == []
    assert await world.quarantine.attempts([(ref.id, command_id)]) == {}
    assert await world.live(await world.worker())
    assert await world.answer(command_id) == (1, {"steps": [1]})


async def test_fresh_commands_commit_ahead_of_a_redelivered_poison(
    world: World, switch: Path
) -> None:
    """Once a poison took a worker down, the next worker applies the other entities'
    fresh commands first: a poison that takes it down too takes none of them along."""
    command_id = await world.send(Lane.ref("poisoned"), Poison("crash", str(switch)))
    assert not await world.live(await world.worker())  # its first attempt
    fresh = [await world.send(Lane.ref(f"fresh-{n}"), Step(n)) for n in range(5)]
    later = await world.send(Lane.ref("poisoned"), Step(9))  # behind the poison, in order
    assert not await world.live(await world.worker())  # redelivered: it crashes again
    # Answered before the crash (else redelivered and counted with the poison).
    assert [await world.answer(c) for c in fresh] == [(1, {"steps": [n]}) for n in range(5)]
    assert later not in world.replies
    assert not await world.live(await world.worker())  # its third attempt, alone
    assert await world.live(await world.worker())
    assert isinstance(await world.answer(command_id), CommandQuarantinedError)
    keys = [(Lane.ref(f"fresh-{n}").id, c) for n, c in enumerate(fresh)]
    assert await world.quarantine.attempts(keys) == {}
    assert await world.steps(Lane.ref("poisoned")) == []  # Step(9) parked behind it


async def test_a_counted_batch_runs_alone_in_its_worker() -> None:
    """It waits for the uncounted batches in flight, and holds new ones back until it
    ends: a poison's first delivery cannot take the worker down beside it."""
    turns, seen = Turns(), []
    healthy_may_end = asyncio.Event()

    async def healthy(name: str, hold: bool = False) -> None:
        async with turns.together():
            seen.append(f"{name} starts")
            if hold:
                await healthy_may_end.wait()
            seen.append(f"{name} ends")

    async def counted() -> None:
        async with turns.alone():
            seen.append("counted starts")
            await asyncio.sleep(0.01)
            seen.append("counted ends")

    first = asyncio.create_task(healthy("h1", hold=True))
    await asyncio.sleep(0)
    suspect = asyncio.create_task(counted())
    await asyncio.sleep(0.01)
    later = asyncio.create_task(healthy("h2"))
    await asyncio.sleep(0.01)
    assert seen == ["h1 starts"]  # the counted batch waits for h1, h2 waits for it
    healthy_may_end.set()
    await asyncio.gather(first, suspect, later)
    order = ["h1 starts", "h1 ends", "counted starts", "counted ends", "h2 starts", "h2 ends"]
    assert seen == order


async def test_a_request_naming_no_entity_keeps_its_place_behind_a_redelivered_one(
    world: World, switch: Path
) -> None:
    """A fence of `pachyderm repartition` (a request naming no entity, answered invalid)
    says its queue is served up to it: it is not answered ahead of a redelivered
    command before it, as the other entities' fresh commands are."""
    await world.send(Lane.ref("poisoned"), Poison("crash", str(switch)))
    assert not await world.live(await world.worker())  # its first attempt
    fence = Message(
        b"null",
        routing_key="pachyderm.commands.00",
        message_id="fence",
        reply_to=world.address,
        content_type="application/json",
        headers={KIND_HEADER: QUERY, ENTITY_TYPE_HEADER: "pachyderm.fence"},
    )
    await world.transport.publish_command(fence)
    fresh = await world.send(Lane.ref("fresh"), Step(1))
    assert not await world.live(await world.worker())  # redelivered: it crashes again
    assert await world.answer(fresh) == (1, {"steps": [1]})
    assert "fence" not in world.replies


async def test_a_redelivered_poison_makes_suspects_of_its_chunk_only(
    world: World, switch: Path
) -> None:
    refs = [Lane.ref(f"lane-{n}") for n in range(40)]
    before = [await world.send(ref, Step(n)) for n, ref in enumerate(refs[:20])]
    poisoned = Lane.ref("poisoned")
    command_id = await world.send(poisoned, Poison("crash", str(switch)))
    after = [await world.send(ref, Step(n)) for n, ref in enumerate(refs[20:], start=20)]
    assert not await world.live(await world.worker())  # one batch of first deliveries
    assert not await world.live(await world.worker())  # redelivered, in chunks of 16
    # The first chunk committed; only the poison's chunk was counted with it.
    assert [await world.answer(c) for c in before[:16]] == [(1, {"steps": [n]}) for n in range(16)]
    keys = [(ref.id, c) for ref, c in zip(refs, before + after, strict=True)]
    counted = await world.quarantine.attempts([*keys, (poisoned.id, command_id)])
    assert len(counted) == 16
    assert counted[(poisoned.id, command_id)] == 1


async def test_a_redelivered_command_that_applied_before_is_answered_from_its_stored_reply(
    world: World, tmp_path: Path
) -> None:
    """Not decided again (see pachyderm.worker._repeats): its handler, a poison by now,
    does not run (it would take the worker down), the attempt a worker counted for it
    before it died goes, and its entity's next command is decided as usual."""
    switch = tmp_path / "poisoned"  # absent: the command applies
    ref = Lane.ref(str(uuid.uuid4()))
    command_id = await world.send(ref, Poison("crash", str(switch)))
    assert await world.live(await world.worker())
    first = await world.answer(command_id)
    assert first == (1, {"steps": [-1]})
    switch.touch()  # decided again now, it would crash its worker
    del world.replies[command_id]
    await world.send(ref, Poison("crash", str(switch)), command_id=command_id)  # a retry
    later = await world.send(ref, Step(2))
    dying = await world.worker()
    assert len(await dying.inbox.take(100)) == 2
    await world.quarantine.count_attempts([(ref.id, command_id)])  # it died deciding them
    await dying.inbox.close()  # both come again, redelivered
    assert await world.live(await world.worker())
    assert await world.answer(command_id) == first
    assert await world.answer(later) == (2, {"steps": [-1, 2]})
    assert await world.quarantine.attempts([(ref.id, command_id)]) == {}
