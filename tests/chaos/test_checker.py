"""The checker on synthetic records: silent on a sound run, and each kind of violation
found when a record, the tables or the consumers' view is broken that way."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chaos.app import APP, Forgot, Punched, Rang, Reminded, Reminder, Retired, Ticket
from chaos.checker import (
    KINDS,
    CommandRow,
    EntityRow,
    EventRow,
    Observed,
    OutboxRow,
    QuarantineRow,
    SeenEffect,
    SnapshotRow,
    Stored,
    check,
)
from chaos.record import ENDED, OK, REJECTED, SENT, UNKNOWN, Attempt, Record, Request
from examples import bank, counter
from pachyderm import Ref, Reject
from pachyderm import _codec as codec
from pachyderm._execution import effect_id, stored_reply

pytestmark = pytest.mark.chaos

VISITS = counter.Counter.ref("visits")
ALICE, BOB = bank.account("alice"), bank.account("bob")
ALARM = Reminder.ref("alarm")
TICKET = Ticket.ref("k-0")
DUE = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class World:
    """A small sound run, built the way the product writes its tables."""

    stored: Stored = field(default_factory=Stored)
    record: Record = field(default_factory=Record)
    observed: Observed = field(default_factory=Observed)
    states: dict[Ref, Any] = field(default_factory=dict)
    versions: dict[Ref, int] = field(default_factory=dict)
    ended: dict[Ref, int] = field(default_factory=dict)  # the version each ended at

    def commit(
        self,
        ref: Ref,
        command_id: str,
        events: Sequence[Any] = (),
        *,
        rejection: Reject | None = None,
        effects: Sequence[tuple[str, bytes]] = (),
        at: datetime | None = None,
        ends: bool = False,
    ) -> Any:
        """Commit one command as a worker would (``at``: its commit time); returns its reply."""
        entity_type = APP.entity_type(ref.type)
        state = self.states.get(ref, entity_type.initial_state())
        version = self.versions.get(ref, 0)
        for event in events:
            version += 1
            new = entity_type.encode_event(event)
            self.stored.events.append(EventRow(ref.id, version, new.name, new.data, command_id, at))
        state = entity_type.evolve(state, events)
        self.states[ref], self.versions[ref] = state, version
        if ends:
            self.ended[ref] = version
        reply = entity_type.dump_state(state)
        answer = stored_reply(rejection=rejection) if rejection else stored_reply(reply=reply)
        self.stored.commands.append(CommandRow(ref.id, command_id, version, answer))
        for index, (destination, payload) in enumerate(effects):
            self.stored.outbox.append(
                OutboxRow(
                    effect_id(ref.id, command_id, index),
                    ref.id,
                    command_id,
                    destination,
                    payload,
                    True,
                )
            )
        return reply

    def told(
        self, ref: Ref, command_id: str, outcome: str, reply: Any = None, detail: str = ""
    ) -> Request:
        request = self.record.add(Request(command_id, ref.type, str(ref.id), "Cmd", {}, "client"))
        request.attempts.append(Attempt(0.0, outcome, 0.1, None, reply, detail))
        return request

    def done(self) -> World:
        self.stored.entities = [
            EntityRow(r.id, r.type, v, "ended" if r in self.ended else None, self.ended.get(r))
            for r, v in self.versions.items()
        ]
        self.observed.queries = {
            ref.id: (self.versions[ref], APP.entity_type(ref.type).dump_state(state))
            for ref, state in self.states.items()
        }
        return self


def mail_effect() -> tuple[str, bytes]:
    return "effect.admin_mailer", codec.encode({"threshold": 10})


def credit_effect(target: Ref, amount: int) -> tuple[str, bytes]:
    body = {
        "entity_type": "account",
        "entity_id": str(target.id),
        "command": "CreditTransfer",
        "data": {"source": str(ALICE.id), "amount": amount},
    }
    return "command.account", codec.encode(body)


def sound() -> World:
    world = World()
    for command_id, amount in (("v-1", 4), ("v-2", 7)):
        effects = [mail_effect()] if command_id == "v-2" else []
        reply = world.commit(
            VISITS, command_id, [counter.Increased(amount=amount)], effects=effects
        )
        world.told(VISITS, command_id, OK, reply)
    world.commit(VISITS, "v-3", [counter.Increased(amount=1)])
    world.told(VISITS, "v-3", SENT)
    mail = effect_id(VISITS.id, "v-2", 0)
    destination, payload = mail_effect()
    world.observed.effects.append(
        SeenEffect(str(mail), destination, str(VISITS.id), "v-2", payload)
    )
    for ref, command_id, events in (
        (ALICE, "open-a", [bank.Opened(owner="a")]),
        (BOB, "open-b", [bank.Opened(owner="b")]),
        (ALICE, "deposit-a", [bank.Deposited(amount=100)]),
    ):
        world.told(ref, command_id, OK, world.commit(ref, command_id, events))
    sent = bank.TransferSent(to=BOB.id, amount=30)
    reply = world.commit(ALICE, "pay-bob", [sent], effects=[credit_effect(BOB, 30)])
    world.told(ALICE, "pay-bob", OK, reply)
    credit = str(effect_id(ALICE.id, "pay-bob", 0))
    world.commit(BOB, credit, [bank.TransferReceived(source=ALICE.id, amount=30)])
    too_much = Reject("insufficient_funds", {"balance": 30})
    world.commit(BOB, "withdraw-b", rejection=too_much)
    world.told(BOB, "withdraw-b", REJECTED, detail="insufficient_funds")
    world.told(BOB, "maybe", UNKNOWN)  # never arrived: fine, it was never promised
    for command_id, event in (("set-1", Reminded("t-1")), ("set-2", Reminded("t-2"))):
        world.told(ALARM, command_id, OK, world.commit(ALARM, command_id, [event]))
    ring(world, "t-1", "fire-1")
    world.told(ALARM, "forget-2", OK, world.commit(ALARM, "forget-2", [Forgot("t-2")]))
    world.told(TICKET, "punch-1", OK, world.commit(TICKET, "punch-1", [Punched()]))
    world.told(TICKET, "retire", OK, world.commit(TICKET, "retire", [Retired()], ends=True))
    world.told(TICKET, "punch-2", ENDED, detail="ended")  # refused: not stored
    return world.done()


def ring(world: World, tag: str, command_id: str, late: float = 0.002) -> None:
    """A timer's fire: nobody sent it; committed ``late`` seconds after it was due."""
    rang = Rang(tag, DUE.timestamp())
    world.commit(ALARM, command_id, [rang], at=DUE + timedelta(seconds=late))


def found(world: World) -> set[str]:
    counts = check(APP, world.record, world.stored, world.observed).counts()
    assert set(counts) == set(KINDS)
    return {kind for kind, count in counts.items() if count}


def test_a_sound_run_shows_no_violation() -> None:
    assert found(sound()) == set()


def test_an_unknown_outcome_may_have_applied_or_not() -> None:
    world = sound()
    world.told(VISITS, "v-1", UNKNOWN)  # a retry's lost reply, for a command that applied
    assert found(world) == set()


def test_a_command_sent_without_a_reply_may_end_dead_lettered() -> None:
    world = sound()
    world.told(VISITS, "refused-by-all", SENT)
    world.observed.dead_letters.add((str(VISITS.id), "refused-by-all"))
    assert found(world) == set()


# -- each kind of violation -----------------------------------------------------------


def acknowledged_never_stored(world: World) -> None:
    world.told(VISITS, "vanished", OK, {"count": 13})


def confirmed_never_applied(world: World) -> None:
    world.told(VISITS, "vanished", SENT)


def rejection_not_stored(world: World) -> None:
    world.told(BOB, "vanished", REJECTED, detail="insufficient_funds")


def applied_twice(world: World) -> None:
    again = APP.entity_type("counter").encode_event(counter.Increased(amount=4))
    world.versions[VISITS] += 1
    world.stored.events.append(
        EventRow(VISITS.id, world.versions[VISITS], again.name, again.data, "v-1")
    )
    world.states[VISITS] = {"count": 16}
    world.done()


def effect_nobody_committed(world: World) -> None:
    world.observed.effects.append(
        SeenEffect(str(uuid.uuid4()), "effect.admin_mailer", str(VISITS.id), "v-9", b"\x80")
    )


def effect_not_as_committed(world: World) -> None:
    seen = world.observed.effects[0]
    world.observed.effects[0] = replace(seen, payload=codec.encode({"threshold": 11}))


def command_nobody_sent(world: World) -> None:
    world.commit(BOB, str(uuid.uuid4()), [bank.TransferReceived(source=ALICE.id, amount=5)])
    world.done()


def effect_never_seen(world: World) -> None:
    world.observed.effects.clear()


def credit_never_applied(world: World) -> None:
    destination, payload = credit_effect(bank.account("carol"), 5)
    world.stored.outbox.append(
        OutboxRow(uuid.uuid4(), ALICE.id, "pay-bob", destination, payload, True)
    )


def version_beyond_history(world: World) -> None:
    world.versions[VISITS] += 1
    world.done()


def event_missing(world: World) -> None:
    world.stored.events = [
        e for e in world.stored.events if (e.entity_id, e.version) != (ALICE.id, 2)
    ]


def snapshot_differs(world: World) -> None:
    world.stored.snapshots.append(SnapshotRow(VISITS.id, 2, codec.encode({"count": 12})))


def reply_differs(world: World) -> None:
    world.record.requests[0].attempts[0].reply = {"count": 5}


def query_differs(world: World) -> None:
    world.observed.queries[VISITS.id] = (3, {"count": 11})


def answers_differ(world: World) -> None:
    retry = Attempt(1.0, REJECTED, 1.1, detail="no")  # told otherwise than the first time
    world.record.requests[0].attempts.append(retry)


def refused_but_applied(world: World) -> None:
    world.record.requests[0].attempts[0].outcome = REJECTED


def timer_never_resolved(world: World) -> None:
    world.told(ALARM, "set-3", OK, world.commit(ALARM, "set-3", [Reminded("t-3")]))
    world.done()


def timer_left_pending(world: World) -> None:
    world.stored.timers = 1


def rang_twice(world: World) -> None:
    ring(world, "t-1", "fire-1-again")
    world.done()


def rang_after_its_cancel(world: World) -> None:
    ring(world, "t-2", "fire-2")
    world.done()


def rang_early(world: World) -> None:
    [fired] = [event for event in world.stored.events if event.command_id == "fire-1"]
    early = replace(fired, recorded_at=DUE - timedelta(milliseconds=1))
    world.stored.events = [early if event is fired else event for event in world.stored.events]


def punched_after_its_end(world: World) -> None:
    world.told(TICKET, "punch-3", OK, world.commit(TICKET, "punch-3", [Punched()]))
    world.done()


def ended_not_marked_in_the_store(world: World) -> None:
    world.ended.clear()
    world.done()


def told_ended_but_applied(world: World) -> None:
    world.ended.clear()  # the store let it through: it applied, and nothing says ended
    world.commit(TICKET, "punch-2", [Punched()])
    world.done()


def rang_unscheduled(world: World) -> None:
    ring(world, "t-9", "fire-9")
    world.done()


def committed_by_two_partitions(world: World) -> None:
    world.done()
    world.stored.split = {TICKET.id: [3, 4]}  # as read_database finds it in the log


@pytest.mark.parametrize(
    ("breaking", "kinds"),
    [
        (acknowledged_never_stored, {"lost"}),
        (confirmed_never_applied, {"lost"}),
        (rejection_not_stored, {"lost"}),
        (applied_twice, {"duplicated"}),
        (effect_nobody_committed, {"effect_without_commit"}),
        (effect_not_as_committed, {"effect_without_commit"}),
        (command_nobody_sent, {"effect_without_commit"}),
        (effect_never_seen, {"effect_never_published"}),
        (credit_never_applied, {"effect_never_published"}),
        (version_beyond_history, {"history_gap"}),
        (event_missing, {"history_gap", "state_mismatch"}),  # the fold shifts too
        (snapshot_differs, {"state_mismatch"}),
        (reply_differs, {"state_mismatch"}),
        (query_differs, {"state_mismatch"}),
        (answers_differ, {"state_mismatch"}),
        (refused_but_applied, {"refused_applied"}),
        (timer_never_resolved, {"timer_unfired"}),
        (timer_left_pending, {"timer_unfired"}),
        (rang_twice, {"timer_repeated"}),
        (rang_after_its_cancel, {"timer_repeated"}),
        (rang_early, {"timer_early"}),
        (rang_unscheduled, {"timer_unscheduled"}),
        (committed_by_two_partitions, {"split_entity"}),
        (punched_after_its_end, {"applied_after_end"}),
        (ended_not_marked_in_the_store, {"applied_after_end"}),
        (told_ended_but_applied, {"refused_applied", "applied_after_end"}),
    ],
)
def test_each_kind_of_violation_is_found_as_that_kind(
    breaking: Callable[[World], None], kinds: set[str]
) -> None:
    world = sound()
    breaking(world)
    assert found(world) == kinds


def with_read_model(world: World) -> World:
    """``world`` with the read model a projection of its stored events keeps."""
    projected: dict[uuid.UUID, tuple[int, int]] = {}
    for event in sorted(world.stored.events, key=lambda e: (e.entity_id, e.version)):
        count, _ = projected.get(event.entity_id, (0, 0))
        projected[event.entity_id] = (count + 1, event.version)
    world.stored.projected = projected
    return world


def test_a_read_model_equal_to_the_histories_shows_no_violation() -> None:
    assert found(with_read_model(sound())) == set()


@pytest.mark.parametrize(
    "breaking",
    [
        lambda projected: projected.update({VISITS.id: (1, 1)}),  # an event missed
        lambda projected: projected.update({uuid.uuid4(): (1, 1)}),  # an entity not stored
        lambda projected: projected.pop(ALICE.id),  # an entity never projected
    ],
)
def test_a_read_model_that_differs_is_a_projection_mismatch(
    breaking: Callable[[dict[uuid.UUID, tuple[int, int]]], object],
) -> None:
    world = with_read_model(sound())
    assert world.stored.projected is not None
    breaking(world.stored.projected)
    assert found(world) == {"projection_mismatch"}


def test_a_confirmed_command_lost_to_the_quarantine_says_so() -> None:
    world = sound()
    world.told(VISITS, "set-aside", SENT)
    world.stored.quarantine.append(QuarantineRow(VISITS.id, "set-aside", "quarantined", DUE, None))
    (lost,) = check(APP, world.record, world.done().stored, world.observed).found["lost"]
    said = "(in quarantine, quarantined): confirmed by the broker, stored as None (first sent at"
    assert said in lost


def test_a_lost_command_says_when_it_was_sent_and_each_attempt() -> None:
    world = sound()
    world.told(VISITS, "dropped", SENT)
    (lost,) = check(APP, world.record, world.done().stored, world.observed).found["lost"]
    # Beside the faults' times (the scenario prints them so) it says which fault it met.
    assert "stored as None (first sent at 0.0 s into the run, " in lost
    assert lost.endswith("; attempts: +0.0 sent +0.1)")
