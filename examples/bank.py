"""A small bank: accounts that open, take deposits, refuse overdrafts and transfer money,
and answer a named query, ``Balance``.

A transfer debits the source, then sends a credit to the target as an
entity-to-entity effect. A target that is not open sends the money back, so
the total is conserved whatever happens.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field

from pachyderm import App, Entity, HandleResult, Ref, Reject, Send, current_ref

Amount = int  # in cents


class Open(BaseModel):
    owner: str = Field(min_length=1, max_length=200)


class Deposit(BaseModel):
    amount: Amount = Field(gt=0)


class Withdraw(BaseModel):
    amount: Amount = Field(gt=0)


class Transfer(BaseModel):
    to: uuid.UUID
    amount: Amount = Field(gt=0)


class CreditTransfer(BaseModel):
    """Sent by the source account to the target; not for outside callers."""

    source: uuid.UUID
    amount: Amount = Field(gt=0)


class ReturnTransfer(BaseModel):
    """Sent back by a target that could not take the money."""

    target: uuid.UUID
    amount: Amount = Field(gt=0)


class Balance(BaseModel):
    """A named query: the balance alone, without the rest of the state."""


class Opened(BaseModel):
    owner: str


class Deposited(BaseModel):
    amount: Amount


class Withdrawn(BaseModel):
    amount: Amount


class TransferSent(BaseModel):
    to: uuid.UUID
    amount: Amount


class TransferReceived(BaseModel):
    source: uuid.UUID
    amount: Amount


class TransferReturned(BaseModel):
    target: uuid.UUID
    amount: Amount


class AccountState(BaseModel):
    owner: str | None = None
    balance: Amount = 0

    @property
    def is_open(self) -> bool:
        return self.owner is not None


def account(key: str) -> Ref:
    """The account known by ``key`` (e.g. ``account("alice")``)."""
    return Account.ref(key)


class Account(Entity[AccountState]):
    commands = (Open, Deposit, Withdraw, Transfer, CreditTransfer, ReturnTransfer)
    events = (Opened, Deposited, Withdrawn, TransferSent, TransferReceived, TransferReturned)
    queries = (Balance,)
    state_type = AccountState

    def init(self) -> AccountState:
        return AccountState()

    def handle(self, message: Any, state: AccountState) -> HandleResult:
        if isinstance(message, Open):
            return Reject("already_open") if state.is_open else [Opened(owner=message.owner)]
        if isinstance(message, CreditTransfer):
            return self._credit(message, state)
        if not state.is_open:
            return Reject("not_open")
        match message:
            case Deposit(amount=amount):
                return [Deposited(amount=amount)]
            case Withdraw(amount=amount) if amount > state.balance:
                return Reject("insufficient_funds", {"balance": state.balance})
            case Withdraw(amount=amount):
                return [Withdrawn(amount=amount)]
            case Transfer(to=to, amount=amount):
                return self._transfer(to, amount, state)
            case ReturnTransfer(target=target, amount=amount):
                return [TransferReturned(target=target, amount=amount)]
        return None

    def _transfer(self, to: uuid.UUID, amount: Amount, state: AccountState) -> HandleResult:
        me = current_ref()
        if to == me.id:
            return Reject("same_account")
        if amount > state.balance:
            return Reject("insufficient_funds", {"balance": state.balance})
        credit = CreditTransfer(source=me.id, amount=amount)
        return [TransferSent(to=to, amount=amount)], [Send(Ref(me.type, to), credit)]

    def _credit(self, message: CreditTransfer, state: AccountState) -> HandleResult:
        if state.is_open:
            return [TransferReceived(source=message.source, amount=message.amount)]
        # Not open: record nothing here, send the money back to its source.
        refund = ReturnTransfer(target=current_ref().id, amount=message.amount)
        return [], [Send(Ref(self.type_name, message.source), refund)]

    def query(self, query: Any, state: AccountState) -> Any:
        if isinstance(query, Balance):
            return {"balance": state.balance}
        return state  # the plain query: the whole state

    def update(self, event: Any, state: AccountState) -> AccountState:
        match event:
            case Opened(owner=owner):
                return state.model_copy(update={"owner": owner})
            case (
                Deposited(amount=amount)
                | TransferReceived(amount=amount)
                | TransferReturned(amount=amount)
            ):
                return state.model_copy(update={"balance": state.balance + amount})
            case Withdrawn(amount=amount) | TransferSent(amount=amount):
                return state.model_copy(update={"balance": state.balance - amount})
        return state


app = App([Account])
