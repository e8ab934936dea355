from examples.bank import (
    Account,
    Balance,
    CreditTransfer,
    Deposit,
    Deposited,
    Open,
    Opened,
    ReturnTransfer,
    Transfer,
    TransferReceived,
    TransferReturned,
    TransferSent,
    Withdraw,
    Withdrawn,
    account,
)
from pachyderm import Send
from pachyderm.testing import given

ALICE, BOB = account("alice"), account("bob")


def open_with(balance: int) -> list[object]:
    return [Opened(owner="alice"), Deposited(amount=balance)]


def test_opening_an_account() -> None:
    given(Account).when(Open(owner="alice")).then(
        events=[Opened(owner="alice")], reply={"owner": "alice", "balance": 0}
    )


def test_an_account_opens_once() -> None:
    given(Account, Opened(owner="alice")).when(Open(owner="eve")).then(rejected="already_open")


def test_a_closed_account_takes_no_deposits() -> None:
    given(Account).when(Deposit(amount=5)).then(rejected="not_open")


def test_deposit_and_withdraw() -> None:
    given(Account, *open_with(100)).when(Withdraw(amount=30)).then(
        events=[Withdrawn(amount=30)], reply={"owner": "alice", "balance": 70}
    )


def test_no_overdraft() -> None:
    outcome = given(Account, *open_with(10)).when(Withdraw(amount=11))
    outcome.then(rejected="insufficient_funds", events=[])
    assert outcome.rejection is not None
    assert outcome.rejection.detail == {"balance": 10}


def test_a_transfer_debits_and_sends_a_credit_to_the_target() -> None:
    outcome = given(Account, *open_with(100)).when(Transfer(to=BOB.id, amount=40))
    outcome.then(
        events=[TransferSent(to=BOB.id, amount=40)],
        state=Account.state_type(owner="alice", balance=60),
    )
    [send] = outcome.effects
    assert isinstance(send, Send)
    assert send.to == BOB
    assert send.command == CreditTransfer(source=outcome.scenario.ref.id, amount=40)


def test_a_transfer_beyond_the_balance_is_refused_without_effects() -> None:
    given(Account, *open_with(10)).when(Transfer(to=BOB.id, amount=40)).then(
        rejected="insufficient_funds", effects=[]
    )


def test_a_transfer_to_oneself_is_refused() -> None:
    scenario = given(Account, *open_with(10))
    scenario.when(Transfer(to=scenario.ref.id, amount=1)).then(rejected="same_account")


def test_an_open_target_takes_the_credit() -> None:
    given(Account, Opened(owner="bob")).when(CreditTransfer(source=ALICE.id, amount=5)).then(
        events=[TransferReceived(source=ALICE.id, amount=5)],
        reply={"owner": "bob", "balance": 5},
    )


def test_a_target_that_is_not_open_sends_the_money_back() -> None:
    scenario = given(Account)
    outcome = scenario.when(CreditTransfer(source=ALICE.id, amount=5))
    outcome.then(events=[], effects=[Send(ALICE, ReturnTransfer(target=scenario.ref.id, amount=5))])
    assert outcome.execution.change is not None, "the bounce must be committed to be sent once"


def test_returned_money_is_credited_back() -> None:
    given(Account, *open_with(10), TransferSent(to=BOB.id, amount=5)).when(
        ReturnTransfer(target=BOB.id, amount=5)
    ).then(
        events=[TransferReturned(target=BOB.id, amount=5)],
        state=Account.state_type(owner="alice", balance=10),
    )


def test_the_balance_query_answers_the_balance_alone() -> None:
    assert given(Account, *open_with(100)).ask(Balance()) == {"balance": 100}
    after = given(Account, *open_with(100)).when(Withdraw(amount=30))
    assert after.ask(Balance()) == {"balance": 70}
