"""A partition's timer firing, on the embedded store with a fire function of the test's:
timers that fall due while an earlier fire waits for its commit go out at once (fires
are pipelined), and stopping ends the loop and the fires in flight, leaving their
timers pending for the next owner."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Collection
from datetime import UTC, datetime

import pytest

from examples import reservation
from pachyderm import Ref
from pachyderm._wire import Request, command_message, parse_request
from pachyderm.store import SqliteEventStore, StoredTimer
from pachyderm.worker import Engine, TimerOptions, WorkerHooks
from pachyderm.worker._engine import Done
from pachyderm.worker._timers import RateLimit, TimerFiring

from ..waiting import eventually

APP = reservation.app


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    store = await SqliteEventStore.open(":memory:")
    await store.migrate()
    yield Engine(APP, store)
    await store.close()


async def hold(engine: Engine, seat: str, seconds: float) -> Ref:
    ref = reservation.Seat.ref(seat)
    message = command_message(APP, ref, reservation.Hold(seat, seconds=seconds))
    await engine.run([parse_request(APP, message)])
    return ref


class Fires:
    """The fire function: records each call; the first ``held`` wait until released."""

    def __init__(self, engine: Engine, held: int = 1) -> None:
        self.engine = engine
        self.held = held
        self.calls: list[list[Ref]] = []
        self.release = asyncio.Event()

    async def __call__(self, requests: list[Request], isolate: float | None = None) -> list[Done]:
        self.calls.append([request.ref for request in requests])
        if len(self.calls) <= self.held:
            await self.release.wait()
        results, _ = await self.engine.run(requests)
        return results


def firing(engine: Engine, fires: Fires) -> TimerFiring:
    return TimerFiring(
        0,
        APP,
        engine.store,
        fires,
        limit=RateLimit(1000.0),
        options=TimerOptions(),
        hooks=WorkerHooks(),
    )


async def lapsed(engine: Engine, ref: Ref) -> bool:
    return any(event.name == "Lapsed" for event in await engine.store.history(ref.id))


async def test_a_timer_due_while_a_fire_waits_for_its_commit_goes_out_at_once(
    engine: Engine,
) -> None:
    first = await hold(engine, "first", 0.05)
    second = await hold(engine, "second", 0.3)
    fires = Fires(engine)
    timers = firing(engine, fires)
    timers.start()
    try:

        async def both_fired() -> bool:
            return len(fires.calls) == 2

        await eventually(both_fired, timeout=5)  # the first still held back
        assert fires.calls == [[first], [second]]
        assert await lapsed(engine, second)
        assert not await lapsed(engine, first)
        fires.release.set()
        await eventually(lambda: lapsed(engine, first), timeout=5)
    finally:
        await timers.stop()
    assert await engine.store.entity_timers(first.id) == []


async def test_timers_due_while_many_fires_wait_for_a_commit_still_go_out(
    engine: Engine,
) -> None:
    # A slow shared commit: every timer falling due meanwhile must be on its way
    # before it ends (to join the next), not held back behind a few fires in flight.
    refs = [await hold(engine, f"slow-{n}", 0.02 + 0.03 * n) for n in range(8)]
    fires = Fires(engine, held=len(refs))
    timers = firing(engine, fires)
    timers.start()
    try:

        async def all_sent() -> bool:  # in eight fires, or fewer if the loop ran late
            return sum(len(call) for call in fires.calls) == len(refs)

        await eventually(all_sent, timeout=5)
        assert [ref for call in fires.calls for ref in call] == refs
        fires.release.set()

        async def all_lapsed() -> bool:
            return all([await lapsed(engine, ref) for ref in refs])

        await eventually(all_lapsed, timeout=5)
    finally:
        await timers.stop()


async def test_timers_due_together_while_a_fire_waits_go_out_in_one_fire(
    engine: Engine,
) -> None:
    first = await hold(engine, "held", 0.01)
    fires = Fires(engine)
    timers = firing(engine, fires)
    timers.start()
    try:

        async def first_sent() -> bool:
            return len(fires.calls) == 1

        await eventually(first_sent, timeout=5)
        refs = [reservation.Seat.ref(seat) for seat in ("a", "b")]
        holds = [
            command_message(APP, ref, reservation.Hold(ref.id.hex, seconds=seconds))
            for ref, seconds in zip(refs, (0.1, 0.102), strict=True)
        ]
        await engine.run([parse_request(APP, message) for message in holds])
        timers.wake(datetime.now(UTC))  # as the partition does for what its commits file

        async def second_sent() -> bool:
            return len(fires.calls) == 2

        await eventually(second_sent, timeout=5)
        await asyncio.sleep(0.05)
        assert fires.calls == [[first], refs]  # 2 ms apart: gathered into one fire
        fires.release.set()
    finally:
        await timers.stop()


async def test_stopping_ends_the_loop_and_the_fires_in_flight(engine: Engine) -> None:
    ref = await hold(engine, "stuck", 0.01)
    fires = Fires(engine)  # never released: the fire waits for ever
    timers = firing(engine, fires)
    timers.start()

    async def fired() -> bool:
        return len(fires.calls) == 1

    await eventually(fired, timeout=5)
    timers.wake(datetime.now(UTC))  # a wake as it stops
    await asyncio.wait_for(timers.stop(), 5)
    assert len(await engine.store.entity_timers(ref.id)) == 1  # pending, for the next owner
    assert not await lapsed(engine, ref)


class CountingReads(SqliteEventStore):
    """The embedded store, counting the firing loop's reads."""

    reads = 0

    async def due_timers(
        self, partition: int, until: datetime, limit: int, *, skip: Collection[uuid.UUID] = ()
    ) -> list[StoredTimer]:
        self.reads += 1
        return await super().due_timers(partition, until, limit, skip=skip)


async def test_a_backlog_is_read_a_batch_at_a_time() -> None:
    store = await CountingReads.open(":memory:")
    await store.migrate()
    engine = Engine(APP, store)
    try:
        refs = [await hold(engine, f"seat-{n}", 0.01) for n in range(12)]
        await asyncio.sleep(0.05)  # twelve due: three batches of four
        fires = Fires(engine)  # the first fire held back until released
        options = TimerOptions(batch=4)
        timers = TimerFiring(
            0, APP, store, fires, limit=RateLimit(1000.0), options=options, hooks=WorkerHooks()
        )
        store.reads = 0
        timers.start()
        # A backlog of this owner's own, not a former owner's (which fires in groups,
        # counted first: see test_timer_poison).
        timers.poison.since = datetime.min.replace(tzinfo=UTC)
        try:

            async def held() -> bool:
                return len(fires.calls) == 1

            await eventually(held, timeout=5)
            await asyncio.sleep(0.2)
            # The batch read is all in flight: the loop waits for the fire, not reading
            # the same timers again and again.
            assert store.reads <= 2, store.reads
            fires.release.set()

            async def all_lapsed() -> bool:
                return all([await lapsed(engine, ref) for ref in refs])

            await eventually(all_lapsed, timeout=5)
        finally:
            await timers.stop()
        assert store.reads <= 6, store.reads  # a read a batch, and those that find the rest
        assert sum(len(call) for call in fires.calls) == 12
    finally:
        await store.close()


class SlowReads(SqliteEventStore):
    """The embedded store, each read of due timers taking ``delay`` seconds."""

    delay = 0.0

    async def due_timers(
        self, partition: int, until: datetime, limit: int, *, skip: Collection[uuid.UUID] = ()
    ) -> list[StoredTimer]:
        await asyncio.sleep(self.delay)
        return await super().due_timers(partition, until, limit, skip=skip)


class Timed(Fires):
    """The fire function, noting when each timer was handed to it."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, held=0)
        self.at: dict[Ref, float] = {}

    async def __call__(self, requests: list[Request], isolate: float | None = None) -> list[Done]:
        self.at.update((request.ref, time.time()) for request in requests)
        return await super().__call__(requests)


@pytest.fixture
async def slow() -> AsyncIterator[Engine]:
    store = await SlowReads.open(":memory:")
    await store.migrate()
    yield Engine(APP, store)
    await store.close()


async def test_the_timers_just_past_the_horizon_do_not_wait_for_a_read(slow: Engine) -> None:
    assert isinstance(slow.store, SlowReads)
    ref = await hold(slow, "past", 4.2)  # past the first read's reach (4 s)
    [timer] = await slow.store.entity_timers(ref.id)
    slow.store.delay = 0.6
    fires = Timed(slow)
    options = TimerOptions(read_ahead=4.0, poll=4.0)
    timers = TimerFiring(
        0, APP, slow.store, fires, limit=RateLimit(1000.0), options=options, hooks=WorkerHooks()
    )
    timers.start()
    try:
        await eventually(lambda: lapsed(slow, ref), timeout=10)
    finally:
        await timers.stop()
    # The next read began before the horizon: the fire did not wait for its 0.6 s.
    assert fires.at[ref] - timer.fire_at.timestamp() < 0.3


async def test_a_stream_across_read_aheads_fires_each_timer_once(slow: Engine) -> None:
    assert isinstance(slow.store, SlowReads)
    refs = [await hold(slow, f"stream-{n}", 0.05 + 0.06 * n) for n in range(20)]
    slow.store.delay = 0.05
    fires = Fires(slow, held=0)
    options = TimerOptions(read_ahead=0.3, poll=0.3)
    timers = TimerFiring(
        0, APP, slow.store, fires, limit=RateLimit(1000.0), options=options, hooks=WorkerHooks()
    )
    timers.start()
    try:

        async def all_lapsed() -> bool:
            return all([await lapsed(slow, ref) for ref in refs])

        await eventually(all_lapsed, timeout=10)
        await asyncio.sleep(0.4)  # a read or two more
    finally:
        await timers.stop()
    sent = sorted((ref for call in fires.calls for ref in call), key=refs.index)
    assert sent == refs  # none fired twice from a read begun before its fire ended


async def test_a_timer_due_during_a_read_fires_when_the_read_ends(slow: Engine) -> None:
    assert isinstance(slow.store, SlowReads)
    ref = await hold(slow, "during", 0.8)
    [timer] = await slow.store.entity_timers(ref.id)
    slow.store.delay = 1.0  # the first read ends 0.2 s after the timer's due time
    fires = Timed(slow)
    timers = firing(slow, fires)
    timers.start()
    try:
        await eventually(lambda: lapsed(slow, ref), timeout=10)
    finally:
        await timers.stop()
    # Not a sleep of 0.8 s more, as if the read had taken no time.
    assert fires.at[ref] - timer.fire_at.timestamp() < 0.6


class EarlyReads(SqliteEventStore):
    """The embedded store, each read of due timers answering ``delay`` seconds after it
    looked (as a read whose answer is slow to come back)."""

    delay = 0.0

    async def due_timers(
        self, partition: int, until: datetime, limit: int, *, skip: Collection[uuid.UUID] = ()
    ) -> list[StoredTimer]:
        found = await super().due_timers(partition, until, limit, skip=skip)
        await asyncio.sleep(self.delay)
        return found


async def test_a_timer_filed_during_the_read_ahead_of_the_next_window_is_not_missed() -> None:
    store = await EarlyReads.open(":memory:")
    await store.migrate()
    engine = Engine(APP, store)
    store.delay = 0.6
    fires = Timed(engine)
    options = TimerOptions(read_ahead=2.0, poll=2.0)
    timers = TimerFiring(
        0, APP, store, fires, limit=RateLimit(1000.0), options=options, hooks=WorkerHooks()
    )
    timers.start()
    try:

        async def reading_ahead() -> bool:
            return timers._next is not None

        await eventually(reading_ahead, timeout=5)  # it looked already: it lacks the next
        ref = await hold(engine, "filed", 0.8)  # past the horizon, within the next window
        [timer] = await store.entity_timers(ref.id)
        timers.wake(timer.fire_at)  # as the partition does for what its commits file
        await eventually(lambda: lapsed(engine, ref), timeout=10)
    finally:
        await timers.stop()
        await store.close()
    assert fires.at[ref] - timer.fire_at.timestamp() < 0.5


class Parking:
    """The partition's quarantine as the firing sees it: these entities are parked."""

    def __init__(self, refs: list[Ref]) -> None:
        self.ids = frozenset(ref.id for ref in refs)

    async def read(self) -> None:
        return None

    def parked(self, entity_id: uuid.UUID) -> bool:
        return entity_id in self.ids

    def parked_entities(self) -> frozenset[uuid.UUID]:
        return self.ids


async def test_a_batch_s_worth_of_parked_timers_does_not_keep_the_others_unread(
    engine: Engine,
) -> None:
    # More parked entities' due timers than a read takes, all due before the free one:
    # read with them, a batch would hold nothing that may fire, for as long as they wait.
    parked = [await hold(engine, f"parked-{n}", 0.01) for n in range(3)]
    free = await hold(engine, "free", 0.05)
    fires = Fires(engine, held=0)
    timers = TimerFiring(
        0,
        APP,
        engine.store,
        fires,
        limit=RateLimit(1000.0),
        options=TimerOptions(batch=2),
        hooks=WorkerHooks(),
        parking=Parking(parked),
    )
    timers.start()
    try:
        await eventually(lambda: lapsed(engine, free), timeout=5)
    finally:
        await timers.stop()
    assert fires.calls == [[free]]
    assert [await lapsed(engine, ref) for ref in parked] == [False, False, False]
