"""The bank evolved (examples/bank_v2.py) against the history version 1 recorded
(tests/evolution/data/bank_v1.jsonl, by tests/evolution/record_bank_v1.py):
``replay-check`` passes on the evolved code and on the untouched examples, and
finds a broken upcaster and a changed ``update``, naming the entity and event."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from examples import bank, bank_v2, counter, reservation
from examples.bank import AccountState, Deposited, Withdrawn
from examples.bank_v2 import Opened, TransferSent
from pachyderm import App, NewerSchemaError, embedded, upcaster
from pachyderm.cli import main
from pachyderm.testing import StoredEvent, given, replay_check
from tests.evolution.record_bank_v1 import ACCOUNTS, RECORDED

EVENTS = 141  # in the recorded file


def check(app: str, capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, Any]:
    status = main(["replay-check", app, "--from", str(RECORDED), "--json", *options])
    return status, json.loads(capsys.readouterr().out)


def test_the_evolved_bank_reads_version_1_histories(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = check("examples.bank_v2", capsys)
    assert status == 0, report["problems"]
    assert (report["entities"], report["events"]) == (ACCOUNTS, EVENTS)
    # The state kept its shape: version 1's snapshots are compared with the new fold.
    assert report["snapshots_compared"] >= 15
    assert report["snapshots_ignored"] == 0


def test_the_untouched_bank_passes_on_its_own_history(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = check("examples.bank", capsys)
    assert status == 0, report["problems"]
    assert (report["entities"], report["events"], report["problems"]) == (ACCOUNTS, EVENTS, [])


@upcaster(Opened, 1)
def holder_from_a_misspelt_field(data: dict[str, Any]) -> dict[str, Any]:
    return {"holder": data["ownr"]}


class BrokenUpcaster(bank_v2.Account):
    """The evolved bank whose ``Opened`` upcaster reads a field that is not there."""

    type_name = "account"
    upcasters = (
        holder_from_a_misspelt_field,
        bank_v2.recipient_was_to,
        bank_v2.withdrawn_split_off,
    )


@upcaster(TransferSent, 2)
def split_without_the_withdrawal(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("TransferSent", data)]


class LostWithdrawal(bank_v2.Account):
    """The evolved bank whose split forgets the ``Withdrawn``: every event reads, but
    the money no longer leaves: the fold differs from the snapshots."""

    type_name = "account"
    upcasters = (
        bank_v2.holder_was_owner,
        bank_v2.recipient_was_to,
        split_without_the_withdrawal,
    )


class ChangedUpdate(bank_v2.Account):
    """The evolved bank whose ``update`` now charges a fee of 1 on each withdrawal,
    without bumping ``update_version``."""

    type_name = "account"

    def update(self, event: Any, state: AccountState) -> AccountState:
        if isinstance(event, Withdrawn):
            return state.model_copy(update={"balance": state.balance - event.amount - 1})
        return super().update(event, state)


broken_upcaster = App([BrokenUpcaster])
lost_withdrawal = App([LostWithdrawal])
changed_update = App([ChangedUpdate])


def test_a_broken_upcaster_is_found_naming_entity_and_event(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, report = check(f"{__name__}:broken_upcaster", capsys)
    assert status == 4
    problems = report["problems"]
    assert len(problems) == ACCOUNTS  # each account's first event
    first = problems[0]
    assert (first["kind"], first["version"], first["event"]) == ("decode", 1, "Opened")
    assert first["schema_version"] == 1
    assert "ownr" in first["error"]
    assert uuid.UUID(first["id"]) in {bank.account(f"customer-{n}").id for n in range(ACCOUNTS)}
    # As text: one line per problem, naming the entity and event, then the summary.
    assert main(["replay-check", f"{__name__}:broken_upcaster", "--from", str(RECORDED)]) == 4
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"account/{first['id']} at v1 Opened (schema 1): decode: ")
    assert lines[-1].startswith(f"replay-check PROBLEMS: {ACCOUNTS} entities")


def test_an_upcaster_that_loses_money_differs_from_the_snapshots(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, report = check(f"{__name__}:lost_withdrawal", capsys)
    assert status == 4
    kinds = {problem["kind"] for problem in report["problems"]}
    assert kinds == {"snapshot"}
    senders = {str(bank.account(f"customer-{n}").id) for n in (*range(3, ACCOUNTS, 3), 6) if n % 7}
    assert {problem["id"] for problem in report["problems"]} <= senders
    assert "the fold gives" in report["problems"][0]["error"]


def test_a_changed_update_differs_from_the_snapshots(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = check(f"{__name__}:changed_update", capsys)
    assert status == 4
    problems = report["problems"]
    assert problems
    assert {p["kind"] for p in problems} == {"snapshot"}
    # Only accounts with a withdrawal (or a transfer sent) before their snapshot.
    assert len(problems) < ACCOUNTS


def test_the_untouched_examples_pass_on_their_stored_histories(tmp_path: Path) -> None:
    async def run() -> None:
        database = f"sqlite:///{tmp_path / 'examples.db'}"
        apps = App([counter.Counter, reservation.Seat, reservation.Subscription])
        async with embedded(apps, database) as fleet:
            for key in ("a", "b"):
                await fleet.client.call(counter.Counter.ref(key), counter.Increment(amount=4))
                await fleet.client.call(counter.Counter.ref(key), counter.Increment(amount=7))
                await fleet.client.call(reservation.Seat.ref(key), reservation.Hold(key))
                await fleet.client.call(reservation.Seat.ref(key), reservation.Confirm(key))
            report = await replay_check(apps, fleet.store)
        assert report.ok, report.problems
        assert (report.entities, report.events) == (4, 8)

    asyncio.run(run())


# -- the testing kit: given stored events of version 1, then what version 3 sees ----------


def test_the_kit_shows_what_the_new_code_sees_of_old_events() -> None:
    bob = bank.account("bob")
    scenario = given(
        bank_v2.Account,
        StoredEvent("Opened", {"owner": "Alice"}),
        StoredEvent("Deposited", {"amount": 100}),
        StoredEvent("TransferSent", {"to": str(bob.id), "amount": 30}, schema_version=1),
    )
    scenario.then(
        events=[
            Opened(holder="Alice"),
            Deposited(amount=100),
            TransferSent(recipient=bob.id, amount=30),
            Withdrawn(amount=30),
        ],
        state=AccountState(owner="Alice", balance=70),
    )
    # And the entity goes on from there, writing version 3.
    scenario.when(bank.Transfer(to=bob.id, amount=70)).then(
        events=[TransferSent(recipient=bob.id, amount=70), Withdrawn(amount=70)],
        state=AccountState(owner="Alice", balance=0),
    )


def test_the_kit_reads_a_version_2_event_and_fails_on_a_wrong_expectation() -> None:
    bob = bank.account("bob")
    stored = StoredEvent("TransferSent", {"recipient": str(bob.id), "amount": 5}, 2)
    given(bank_v2.Account, stored).then(
        events=[TransferSent(recipient=bob.id, amount=5), Withdrawn(amount=5)]
    )
    with pytest.raises(AssertionError, match="events: expected"):
        given(LostWithdrawal, stored).then(
            events=[TransferSent(recipient=bob.id, amount=5), Withdrawn(amount=5)]
        )


def test_the_kit_refuses_an_event_newer_than_the_code() -> None:
    with pytest.raises(NewerSchemaError):
        given(bank_v2.Account, StoredEvent("Opened", {"holder": "Al"}, schema_version=3))
    with pytest.raises(NewerSchemaError):
        given(bank.Account, StoredEvent("TransferSent", {"recipient": "x", "amount": 1}, 3))
