"""The testing kit must catch what it promises to catch."""

from dataclasses import dataclass
from typing import Any

import pytest

from examples.bank import Account, Balance, Deposit, Deposited, Opened
from examples.counter import AdminMailer, Counter, Increased, Increment
from pachyderm import Entity, HandleResult, UnknownNameError
from pachyderm.testing import given


def test_then_fails_on_wrong_events_state_reply_and_effects() -> None:
    outcome = given(Counter).when(Increment(amount=2))
    with pytest.raises(AssertionError, match="events: expected"):
        outcome.then(events=[Increased(amount=3)])
    with pytest.raises(AssertionError, match="state: expected"):
        outcome.then(state={"count": 3})
    with pytest.raises(AssertionError, match="reply: expected"):
        outcome.then(reply={"count": 3})
    with pytest.raises(AssertionError, match="effects: expected"):
        outcome.then(effects=[AdminMailer.notify(threshold=10)])


def test_then_fails_on_an_unexpected_rejection_and_a_missing_one() -> None:
    with pytest.raises(AssertionError, match="expected rejection 'nope', got None"):
        given(Counter).when(Increment()).then(rejected="nope")
    with pytest.raises(AssertionError, match=r"the command was rejected: .*not_open"):
        given(Account).when(Deposit(amount=5)).then(events=[])


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Ticked:
    pass


class Impure(Entity[int]):
    """update depends on something other than the event and the state."""

    commands = (Tick,)
    events = (Ticked,)
    calls = 0

    def init(self) -> int:
        return 0

    def handle(self, message: Any, state: int) -> HandleResult:
        return [Ticked()]

    def update(self, event: Any, state: int) -> int:
        Impure.calls += 1
        return Impure.calls


class TupleState(Entity[tuple[int, ...]]):
    """A state that does not survive a snapshot without a state_type."""

    commands = (Tick,)
    events = (Ticked,)

    def init(self) -> tuple[int, ...]:
        return ()

    def handle(self, message: Any, state: tuple[int, ...]) -> HandleResult:
        return [Ticked()]

    def update(self, event: Any, state: tuple[int, ...]) -> tuple[int, ...]:
        return (*state, 1)


def test_an_update_that_is_not_a_pure_fold_is_caught() -> None:
    with pytest.raises(AssertionError, match="replaying the history gives"):
        given(Impure).when(Tick())


def test_a_state_that_does_not_survive_a_snapshot_is_caught() -> None:
    with pytest.raises(AssertionError, match=r"set TupleState\.state_type"):
        given(TupleState).when(Tick())

    class Fixed(TupleState):
        state_type = tuple[int, ...]

    given(Fixed).when(Tick()).then(state=(1,))


def test_ask_answers_a_registered_query_as_plain_data_and_refuses_others() -> None:
    scenario = given(Account, Opened(owner="alice"), Deposited(amount=5))
    assert scenario.ask(Balance()) == {"balance": 5}
    assert scenario.when(Deposit(amount=2)).ask(Balance()) == {"balance": 7}
    with pytest.raises(UnknownNameError, match="not a registered query"):
        scenario.ask(Deposit(amount=1))
