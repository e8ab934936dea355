"""The bank's accounts (examples/bank.py) two versions later, reading the same histories.

- Version 2 renames fields: ``Opened.owner`` is now ``holder``, ``TransferSent.to``
  is now ``recipient``.
- Version 3 splits ``TransferSent``: the money leaves by a ``Withdrawn`` of its own,
  and ``TransferSent`` only records the transfer (``update`` no longer moves money
  for it). New transfers are written as the two events.

Upcasters bring the events version 1 stored to what this code reads, on every
load; the stored bytes are never rewritten. The state keeps its shape, so the
snapshots version 1 took stay valid, and ``pachyderm replay-check examples.bank_v2``
compares them with the fold of the upcast histories. The tests run it over a
history version 1 recorded (tests/evolution/data/bank_v1.jsonl).
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from pydantic import BaseModel

from pachyderm import App, Entity, HandleResult, Ref, Reject, Send, current_ref, upcaster

from . import bank
from .bank import AccountState, Amount, Deposited, TransferReceived, TransferReturned, Withdrawn


class Opened(BaseModel):
    schema_version: ClassVar[int] = 2
    holder: str


class TransferSent(BaseModel):
    """A transfer to ``recipient``; the money left by the ``Withdrawn`` beside it."""

    schema_version: ClassVar[int] = 3
    recipient: uuid.UUID
    amount: Amount


@upcaster(Opened, 1)
def holder_was_owner(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2: ``owner`` renamed ``holder``."""
    return {"holder": data["owner"]}


@upcaster(TransferSent, 1)
def recipient_was_to(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2: ``to`` renamed ``recipient``."""
    return {"recipient": data["to"], "amount": data["amount"]}


@upcaster(TransferSent, 2)
def withdrawn_split_off(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Version 3: one event becomes the transfer (version 3) and its ``Withdrawn``."""
    return [("TransferSent", data), ("Withdrawn", {"amount": data["amount"]})]


class Account(Entity[AccountState]):
    """Version 1's commands, queries and state (examples/bank.py); events of version 3."""

    type_name = "account"
    commands = bank.Account.commands
    events = (Opened, Deposited, Withdrawn, TransferSent, TransferReceived, TransferReturned)
    queries = bank.Account.queries
    state_type = AccountState
    upcasters = (holder_was_owner, recipient_was_to, withdrawn_split_off)

    def init(self) -> AccountState:
        return AccountState()

    def handle(self, message: Any, state: AccountState) -> HandleResult:
        match message:
            case bank.Open(owner=owner):
                return Reject("already_open") if state.is_open else [Opened(holder=owner)]
            case bank.CreditTransfer(source=source, amount=amount) if state.is_open:
                return [TransferReceived(source=source, amount=amount)]
            case bank.CreditTransfer(source=source, amount=amount):
                refund = bank.ReturnTransfer(target=current_ref().id, amount=amount)
                return [], [Send(Ref(self.type_name, source), refund)]
            case _ if not state.is_open:
                return Reject("not_open")
            case bank.Deposit(amount=amount):
                return [Deposited(amount=amount)]
            case bank.Withdraw(amount=amount) if amount > state.balance:
                return Reject("insufficient_funds", {"balance": state.balance})
            case bank.Withdraw(amount=amount):
                return [Withdrawn(amount=amount)]
            case bank.Transfer(to=to, amount=amount):
                return self._send(to, amount, state)
            case bank.ReturnTransfer(target=target, amount=amount):
                return [TransferReturned(target=target, amount=amount)]
        return None

    def _send(self, to: uuid.UUID, amount: Amount, state: AccountState) -> HandleResult:
        me = current_ref()
        if to == me.id:
            return Reject("same_account")
        if amount > state.balance:
            return Reject("insufficient_funds", {"balance": state.balance})
        events = [TransferSent(recipient=to, amount=amount), Withdrawn(amount=amount)]
        credit = bank.CreditTransfer(source=me.id, amount=amount)
        return events, [Send(Ref(me.type, to), credit)]

    def query(self, query: Any, state: AccountState) -> Any:
        return {"balance": state.balance} if isinstance(query, bank.Balance) else state

    def update(self, event: Any, state: AccountState) -> AccountState:
        match event:
            case Opened(holder=holder):
                return state.model_copy(update={"owner": holder})
            case Deposited(amount=amount) | TransferReceived(amount=amount):
                return state.model_copy(update={"balance": state.balance + amount})
            case TransferReturned(amount=amount):
                return state.model_copy(update={"balance": state.balance + amount})
            case Withdrawn(amount=amount):
                return state.model_copy(update={"balance": state.balance - amount})
        return state  # TransferSent: recorded; the Withdrawn beside it moved the money


app = App([Account])
