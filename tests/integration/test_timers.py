"""Durable timers on the real fleet: worker processes on the machine's RabbitMQ and
PostgreSQL, checked against the stored histories and the stored timers.

Invariants checked: a timer survives a SIGKILL of the worker that owns it and
fires on the new owner, once in effect; a timer cancelled as it falls due never
also fires; scheduling a key again leaves one timer, and only the newer fires;
a fired command's event is never committed before the timer's stored due time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from examples import reservation
from pachyderm import Client, Ref, RejectedError
from pachyderm import _codec as codec
from pachyderm.store import PostgresEventStore, RecordedEvent, StoredTimer

from ..waiting import eventually
from . import timer_app
from .harness import Fleet, fleet_fixture, fleet_store

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


running = fleet_fixture("tests.integration.timer_app:app", 8, name="running")


@pytest.fixture
async def store(running: Fleet) -> AsyncIterator[PostgresEventStore]:
    async with fleet_store(running) as opened:
        yield opened


async def histories(store: PostgresEventStore, refs: list[Ref]) -> dict[Ref, list[RecordedEvent]]:
    found = await asyncio.gather(*(store.history(ref.id) for ref in refs))
    return dict(zip(refs, found, strict=True))


def names(events: list[RecordedEvent]) -> list[str]:
    return [event.name for event in events]


async def all_fired(store: PostgresEventStore, timeout: float) -> None:
    async def none_pending() -> bool:
        return await store.count_timers() == 0

    await eventually(none_pending, timeout=timeout, interval=0.1)


async def test_timers_survive_a_sigkill_of_their_owner(
    running: Fleet, store: PostgresEventStore
) -> None:
    doomed = running.start_worker("w1")
    running.start_worker("w2")
    await running.balanced()
    seats = [reservation.Seat.ref(f"kill-{n}") for n in range(80)]
    async with running.client() as client:
        await asyncio.gather(*(client.call(s, reservation.Hold("ann", seconds=2.5)) for s in seats))
    timers = [t for s in seats for t in await store.entity_timers(s.id)]
    assert len(timers) == len(seats)
    owned = doomed.owned() or set()
    orphaned = [t for t in timers if t.partition in owned]
    assert orphaned, "the killed worker owned none of the timers: the test proves nothing"
    doomed.kill()
    killed_at = time.time()
    assert all(t.due_at.timestamp() > killed_at for t in timers), "killed after a due time"
    await running.balanced()
    await all_fired(store, timeout=30)
    for seat, events in (await histories(store, seats)).items():
        assert names(events) == ["Held", "Lapsed"], f"{seat}: {names(events)}"
    print(f"\n{len(orphaned)} of {len(timers)} timers fired on the new owner after SIGKILL")


async def confirm_at(client: Client, seat: Ref, when: float) -> str:
    """Confirm the hold at wall-clock ``when``; "accepted" or the reason it was refused."""
    await asyncio.sleep(max(0.0, when - time.time()))
    try:
        await client.call(seat, reservation.Confirm("bob"))
    except RejectedError as rejected:
        return rejected.reason
    return "accepted"


async def test_a_timer_cancelled_as_it_falls_due_never_also_fires(
    running: Fleet, store: PostgresEventStore
) -> None:
    running.start_worker("w1")
    running.start_worker("w2")
    await running.balanced()
    seats = [reservation.Seat.ref(f"race-{n}") for n in range(120)]
    rng = random.Random(13)
    async with running.client() as client:
        await asyncio.gather(*(client.call(s, reservation.Hold("bob", seconds=1.5)) for s in seats))
        dues = {s: (await store.entity_timers(s.id))[0].due_at.timestamp() for s in seats}
        # Confirmations spread around each due time: some win, some lose, many tie.
        accepted = await asyncio.gather(
            *(confirm_at(client, s, dues[s] + rng.uniform(-0.1, 0.1)) for s in seats)
        )
    await all_fired(store, timeout=15)
    outcomes = {"sold": 0, "lapsed": 0}
    for (seat, events), confirmed in zip(
        (await histories(store, seats)).items(), accepted, strict=True
    ):
        if confirmed == "accepted":
            assert names(events) == ["Held", "Confirmed"], f"{seat}: {names(events)}"
            outcomes["sold"] += 1
        else:
            assert confirmed == "not_held"
            assert names(events) == ["Held", "Lapsed"], f"{seat}: {names(events)}"
            outcomes["lapsed"] += 1
    print(f"\ncancel racing the due time: {outcomes}")
    assert outcomes["sold"], f"the race was never run both ways: {outcomes}"
    assert outcomes["lapsed"], f"the race was never run both ways: {outcomes}"


def rang(events: list[RecordedEvent]) -> list[dict[str, Any]]:
    return [codec.decode(event.data) for event in events if event.name == "Rang"]


async def test_replacing_a_key_leaves_one_timer_and_only_the_newer_fires(
    running: Fleet, store: PostgresEventStore
) -> None:
    running.start_worker("w1")
    await running.balanced()
    alarms = [timer_app.Alarm.ref(f"replace-{n}") for n in range(20)]
    # Even alarms are replaced by a later timer, odd ones by an earlier one.
    first = {a: 1.0 if n % 2 == 0 else 3.0 for n, a in enumerate(alarms)}
    second = {a: 2.0 if n % 2 == 0 else 1.0 for n, a in enumerate(alarms)}
    replaced: dict[Ref, float] = {}  # when each second Arm was sent and answered
    async with running.client() as client:
        for alarm in alarms:
            await client.call(alarm, timer_app.Arm("first", first[alarm], key="k"))
            sent = time.time()
            await client.call(alarm, timer_app.Arm("second", second[alarm], key="k"))
            replaced[alarm] = (sent + time.time()) / 2
            pending = await store.entity_timers(alarm.id)
            # On a loaded machine the newer one may have fired already: the histories
            # below show it fired once, and the older one never.
            if pending or time.time() < replaced[alarm] + second[alarm] - 0.5:
                [timer] = pending
                assert timer.key == "k"
                due_in = timer.due_at.timestamp() - replaced[alarm]
                assert due_in == pytest.approx(second[alarm], abs=0.5)
    await all_fired(store, timeout=15)
    # Past the latest first due time too: a replaced timer that fired late would show.
    await asyncio.sleep(max(0.0, max(replaced.values()) + 3.5 - time.time()))
    for alarm, events in (await histories(store, alarms)).items():
        assert names(events) == ["Armed", "Armed", "Rang"], f"{alarm}: {names(events)}"
        assert [r["tag"] for r in rang(events)] == ["second"]


async def test_a_timer_never_fires_before_its_stored_due_time(
    running: Fleet, store: PostgresEventStore
) -> None:
    running.start_worker("w1")
    running.start_worker("w2")
    await running.balanced()
    rng = random.Random(7)
    alarms = [timer_app.Alarm.ref(f"early-{n}") for n in range(150)]
    async with running.client() as client:
        await asyncio.gather(
            *(client.call(a, timer_app.Arm("t", rng.uniform(0.2, 2.0))) for a in alarms)
        )
    stored: dict[Ref, StoredTimer] = {}
    for alarm in alarms:
        pending = await store.entity_timers(alarm.id)
        if pending:  # the shortest may have fired already: their events say their due time
            stored[alarm] = pending[0]
    assert len(stored) > len(alarms) // 2, "most timers fired before they could be read"
    await all_fired(store, timeout=15)
    lateness = []
    for alarm, events in (await histories(store, alarms)).items():
        [fired] = [e for e in events if e.name == "Rang"]
        [ring] = rang(events)
        due = float(ring["due"])
        if alarm in stored:
            assert due == pytest.approx(stored[alarm].due_at.timestamp(), abs=1e-6)
        assert fired.recorded_at.timestamp() >= due, f"{alarm} fired early: {fired} < {due}"
        assert ring["missed"] == 0
        lateness.append(fired.recorded_at.timestamp() - due)
    lateness.sort()
    p50, p99 = lateness[len(lateness) // 2], lateness[int(len(lateness) * 0.99)]
    print(f"\nlateness of {len(lateness)} fires: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
