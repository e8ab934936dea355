"""The checker's ``quarantine_violated`` on synthetic records: silent on a poison set
aside as it should be, found for each way a quarantine can fail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from chaos.app import APP, Bumped, Ticked, Volatile
from chaos.checker import QuarantineRow, check
from chaos.record import OK, QUARANTINED, Attempt, Request
from examples import counter

from .test_checker import DUE, VISITS, World, sound

pytestmark = pytest.mark.chaos

VOLATILE = Volatile.ref("v-0")
QUARANTINED_AT, SKIPPED_AT = DUE, DUE + timedelta(seconds=2)


def poisoned() -> World:
    """A sound run with a poison: bumped before, quarantined, skipped, bumped after."""
    world = sound()
    # A caller giving up (the sound run's "maybe") is a stall in a run with poisons.
    world.record.requests = [r for r in world.record if r.command_id != "maybe"]
    world.told(
        VOLATILE, "b-1", OK, world.commit(VOLATILE, "b-1", [Bumped()], at=DUE - timedelta(1))
    )
    poison = world.told(VOLATILE, "poison", QUARANTINED, detail="quarantined after 3")
    poison.command = "Crash"
    later = world.commit(VOLATILE, "b-2", [Bumped()], at=SKIPPED_AT + timedelta(seconds=0.1))
    world.told(VOLATILE, "b-2", OK, later)
    world.stored.quarantine.append(
        QuarantineRow(VOLATILE.id, "poison", "skipped", QUARANTINED_AT, SKIPPED_AT)
    )
    return world.done()


def violations(world: World, stall_bound: float | None = 60.0) -> list[str]:
    found = check(APP, world.record, world.stored, world.observed, stall_bound=stall_bound)
    assert found.clean == (not found.found["quarantine_violated"]), found.describe()
    return found.found["quarantine_violated"]


def test_a_poison_set_aside_and_skipped_shows_no_violation() -> None:
    assert violations(poisoned()) == []


def applied_while_parked(world: World) -> None:
    world.commit(VOLATILE, "b-3", [Bumped()], at=QUARANTINED_AT + timedelta(seconds=1))
    world.told(VOLATILE, "b-3", OK, world.states[VOLATILE])
    world.done()


def ticked_while_parked(world: World) -> None:
    world.commit(VOLATILE, "tick-7", [Ticked()], at=QUARANTINED_AT + timedelta(seconds=0.5))
    world.done()


def never_quarantined(world: World) -> None:
    world.stored.quarantine.clear()


def still_parked(world: World) -> None:
    world.stored.parked = 1


def healthy_stalled(world: World) -> None:
    # A retry of the sound run's v-2, answered as stored, only late.
    request = world.record.add(Request("v-2", VISITS.type, str(VISITS.id), "Cmd", {}, "raw"))
    reply = {"count": 11}
    request.attempts += [Attempt(1.0), Attempt(6.0, OK, 70.0, reply=reply)]


def healthy_never_answered(world: World) -> None:
    request = world.record.add(Request("gone", VISITS.type, str(VISITS.id), "Cmd", {}, "client"))
    request.attempts.append(Attempt(1.0))


@pytest.mark.parametrize(
    ("breaking", "shown"),
    [
        (applied_while_parked, "while parked behind poison"),
        (ticked_while_parked, "tick-7 applied at version 3 while parked behind poison"),
        (never_quarantined, "never quarantined"),
        (still_parked, "still parked"),
        (healthy_stalled, "answered after 69.0 s (first sent at "),
        (healthy_never_answered, "never answered"),
    ],
)
def test_each_way_a_quarantine_fails_is_found(
    breaking: Callable[[World], None], shown: str
) -> None:
    world = poisoned()
    breaking(world)
    found = violations(world)
    assert len(found) == 1, found
    assert shown in found[0]


def test_stalls_are_looked_for_only_given_a_bound() -> None:
    world = poisoned()
    healthy_never_answered(world)
    assert violations(world, stall_bound=None) == []


def test_a_stall_shows_its_partition_and_when_it_committed() -> None:
    # A late answer to a command committed in time is the reply's way back, not its
    # partition's owner: the line says which, for the workers' logs.
    world = poisoned()
    committed_at = datetime.now(UTC) + timedelta(seconds=30)
    world.commit(VISITS, "late", [counter.Increased(amount=1)], at=committed_at)
    request = world.record.add(Request("late", VISITS.type, str(VISITS.id), "Cmd", {}, "raw"))
    request.attempts.append(Attempt(1.0, OK, 80.0, reply=world.states[VISITS]))
    world.done()
    world.stored.partitions = {VISITS.id: 5}
    (found,) = violations(world)
    took = world.record.since(committed_at) - 1.0
    clock = world.record.clock(1.0)
    assert f"answered after 79.0 s (first sent at 1.0 s into the run, {clock} UTC" in found
    assert f", partition 5, committed after {took:.1f} s; by raw, attempts: +0.0 ok +79.0)" in found
