"""Poison timers (see pachyderm.worker._timer_poison): a fire that takes its worker down
is counted before the next owner runs it again, spaced by the back-off, and held after
its attempts; the timers beside it fire; an operator's release lets it fire again.

A worker's death is a :class:`Crash` raised in the fire (nothing catches it: the firing
loop ends, as the process would), and the next owner a new :class:`TimerFiring`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from pachyderm import Ref
from pachyderm._wire import Request
from pachyderm.store import SqliteEventStore, StoredTimer
from pachyderm.worker import Engine, TimerOptions, WorkerHooks
from pachyderm.worker._engine import Done
from pachyderm.worker._isolation import HandlerDiedError
from pachyderm.worker._timer_poison import Fire, TimerPoison
from pachyderm.worker._timers import RateLimit, TimerFiring

from ..waiting import eventually
from .test_timer_firing import APP, hold, lapsed


class Crash(BaseException):
    """A worker dying in a fire."""


class Quarantines(WorkerHooks):
    def __init__(self) -> None:
        self.held: list[tuple[str, str]] = []

    def quarantined(self, entity_type: str, policy: str) -> None:
        self.held.append((entity_type, policy))


class Deadly:
    """The fire function: a call that holds ``poison`` dies while ``armed``."""

    def __init__(self, engine: Engine, poison: Ref, error: BaseException | None = None) -> None:
        self.engine, self.poison, self.armed = engine, poison, True
        self.error = error or Crash(str(poison))
        self.calls: list[list[Ref]] = []

    async def __call__(self, requests: list[Request], isolate: float | None = None) -> list[Done]:
        refs = [request.ref for request in requests]
        self.calls.append(refs)
        if self.armed and self.poison in refs:
            raise self.error
        results, _ = await self.engine.run(requests)
        return results

    @property
    def deaths(self) -> int:
        return sum(self.poison in call for call in self.calls)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    store = await SqliteEventStore.open(":memory:")
    await store.migrate()
    yield Engine(APP, store)
    await store.close()


def owner(
    engine: Engine, fires: Deadly, hooks: WorkerHooks, isolation: float | None = None
) -> TimerFiring:
    """A new owner of partition 0, firing."""
    timers = TimerFiring(
        0,
        APP,
        engine.store,
        fires,
        limit=RateLimit(1000.0),
        options=TimerOptions(poll=0.05, read_ahead=0.05),
        hooks=hooks,
        max_attempts=3,
        isolation=isolation,
    )
    timers.start()
    return timers


async def died(timers: TimerFiring, fires: Deadly, deaths: int) -> None:
    """Wait for the owner's death in its fire (``deaths`` in all by then), and bury it."""

    async def dead() -> bool:
        return fires.deaths == deaths

    try:
        await eventually(dead, timeout=10)
    finally:
        await timers.stop()


async def test_a_timer_that_kills_its_workers_is_held_after_its_attempts(
    engine: Engine,
) -> None:
    hooks = Quarantines()
    poison = await hold(engine, "poison", 0.05)
    healthy = await hold(engine, "healthy", 0.05)
    fires = Deadly(engine, poison)
    await died(owner(engine, fires, hooks), fires, 1)  # its own timer: run uncounted
    [timer] = await engine.store.entity_timers(poison.id)
    assert timer.attempts == 0
    await died(owner(engine, fires, hooks), fires, 2)  # the former owner's: counted first
    [timer] = await engine.store.entity_timers(poison.id)
    assert timer.attempts == 1
    assert timer.fire_at > datetime.now(UTC)  # the next owner waits the back-off
    await died(owner(engine, fires, hooks), fires, 3)  # counted before: alone
    assert await lapsed(engine, healthy)  # which let its neighbour go
    fourth = owner(engine, fires, hooks)
    try:

        async def held() -> bool:
            return hooks.held == [("seat", "hold")]

        await eventually(held, timeout=10)
    finally:
        await fourth.stop()
    assert fires.deaths == 3  # max_attempts: the first owner's and two counted
    [timer] = await engine.store.entity_timers(poison.id)
    assert timer.fire_at > datetime.now(UTC) + timedelta(days=365 * 50)
    assert not await lapsed(engine, poison)

    # The fix deployed, an operator releases it: it fires (counted first, as risky).
    fires.armed = False
    assert await engine.store.release_timer(poison.id, timer.key)
    fifth = owner(engine, fires, hooks)
    try:
        await eventually(lambda: lapsed(engine, poison), timeout=10)
    finally:
        await fifth.stop()
    assert await engine.store.entity_timers(poison.id) == []


async def test_a_timer_that_hangs_its_worker_is_held_by_the_same_worker(engine: Engine) -> None:
    """Interrupted by the watchdog each time (HandlerDiedError: nothing committed), the
    worker lives on: the call's fires count an attempt each, then go alone."""
    hooks = Quarantines()
    poison = await hold(engine, "poison", 0.05)
    healthy = await hold(engine, "healthy", 0.05)
    fires = Deadly(engine, poison, HandlerDiedError("deciding overran the handler budget"))
    timers = owner(engine, fires, hooks)
    try:

        async def held() -> bool:
            return hooks.held == [("seat", "hold")]

        await eventually(held, timeout=15)
        assert await lapsed(engine, healthy)
    finally:
        await timers.stop()
    assert fires.deaths == 3
    with_poison = [call for call in fires.calls if poison in call]
    assert with_poison[1:] == [[poison], [poison]]  # alone once counted
    [timer] = await engine.store.entity_timers(poison.id)
    assert timer.attempts == 3


class Isolated(Deadly):
    """Risky calls go to a forked child: one holding ``poison`` kills its child (while
    ``armed``); the first call of ``victim`` alone loses its worker (killed from outside,
    as a chaos fault does, while the call's child runs)."""

    def __init__(self, engine: Engine, poison: Ref, victim: Ref) -> None:
        super().__init__(engine, poison, HandlerDiedError("the child died"))
        self.victim, self.spared = victim, False

    async def __call__(self, requests: list[Request], isolate: float | None = None) -> list[Done]:
        assert isolate is not None or self.poison not in [r.ref for r in requests]
        if [request.ref for request in requests] == [self.victim] and not self.spared:
            self.spared = True
            self.calls.append([self.victim])
            raise Crash("the worker was killed")
        return await super().__call__(requests, isolate)


async def test_only_a_dead_child_counts_a_timer_beside_a_poison(engine: Engine) -> None:
    """Decided in children, fires are counted when their child dies, not before they run:
    a healthy timer in a poison's group, whose worker is then killed while it runs alone,
    has one attempt counted (the group's), not three, and fires on the next owner; the
    poison is held after two dead children (and its former owner's try)."""
    hooks = Quarantines()
    poison = await hold(engine, "poison", 0.05)
    healthy = await hold(engine, "healthy", 0.05)
    fires = Isolated(engine, poison, healthy)
    await asyncio.sleep(0.1)  # due before the owner below began: risky, its group's
    first = owner(engine, fires, hooks, isolation=5.0)
    try:

        async def killed() -> bool:
            return fires.spared

        await eventually(killed, timeout=10)
    finally:
        await first.stop()
    assert fires.calls[0] in ([poison, healthy], [healthy, poison])
    [timer] = await engine.store.entity_timers(healthy.id)
    assert timer.attempts == 1  # its group's dead child; not its own try, cut short
    await fires_then_holds(owner(engine, fires, hooks, isolation=5.0), engine, healthy, hooks)
    assert fires.deaths == 2


async def fires_then_holds(
    timers: TimerFiring, engine: Engine, healthy: Ref, hooks: Quarantines
) -> None:
    """Wait for ``timers`` to fire ``healthy``'s timer and hold the poison's, then stop it."""
    try:
        await eventually(lambda: lapsed(engine, healthy), timeout=10)

        async def held() -> bool:
            return hooks.held == [("seat", "hold")]

        await eventually(held, timeout=15)
    finally:
        await timers.stop()


def _fire(attempts: int, due: datetime) -> Fire:
    """A due timer (``due`` its due time and next try) and its fire's request."""
    timer = StoredTimer(uuid.uuid4(), "seat", "k", 0, due, "s", b"", due, attempts)
    seat = APP.entity_type("seat")
    return timer, Request(Ref("seat", timer.entity_id), seat, None, "c")


async def test_risky_fires_go_a_group_at_a_time_and_the_exhausted_are_held(
    engine: Engine,
) -> None:
    since = datetime.now(UTC)
    before, after = since - timedelta(seconds=1), since + timedelta(seconds=1)
    poison = TimerPoison(0, engine.store, WorkerHooks(), max_attempts=3, since=since)
    own = [_fire(0, after) for _ in range(3)]
    inherited = [_fire(0, before) for _ in range(20)]
    failed = [_fire(1, after), _fire(1, before)]
    exhausted = [_fire(3, after), _fire(2, before)]
    made = [poison.made(t) for t, _ in [*own[:1], *inherited[:1], *failed, *exhausted]]
    assert made == [0, 1, 1, 2, 3, 3]
    run, held, later = poison.split([*own, *inherited, *failed, *exhausted])
    # Those counted before go alone; the others then in groups of 16 beside the safe.
    assert run == [*own, failed[0]]
    assert held == exhausted
    assert later == [*inherited, failed[1]]
    run, held, later = poison.split([*own, *inherited])
    assert run == [*own, *inherited[:16]]
    assert held == []
    assert later == inherited[16:]


async def test_a_dead_child_that_names_its_poison_counts_that_timer_only(engine: Engine) -> None:
    """A child names the entity it died deciding: the healthy timer of its group goes again
    uncounted and fires; the poison alone is counted, then held."""
    hooks = Quarantines()
    poison = await hold(engine, "poison", 0.05)
    healthy = await hold(engine, "healthy", 0.05)
    fires = Deadly(engine, poison, HandlerDiedError("the child died", culprit=poison))
    counted: list[uuid.UUID] = []
    postpone = engine.store.postpone_timers

    async def postpone_timers(
        delays: Mapping[tuple[uuid.UUID, str], float],
    ) -> dict[tuple[uuid.UUID, str], int]:
        counted.extend(entity_id for entity_id, _ in delays)
        return await postpone(delays)

    engine.store.postpone_timers = postpone_timers  # type: ignore[method-assign]
    await asyncio.sleep(0.1)  # due before the owner below began: risky, one group
    await fires_then_holds(owner(engine, fires, hooks, isolation=5.0), engine, healthy, hooks)
    assert fires.calls[0] in ([poison, healthy], [healthy, poison])
    assert healthy.id not in counted  # fired, never counted
    assert poison.id in counted
    [timer] = await engine.store.entity_timers(poison.id)
    assert (timer.attempts, fires.deaths) == (2, 2)  # and its former owner's try
