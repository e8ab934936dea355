from dataclasses import dataclass

import pydantic
import pytest

from pachyderm import DefinitionError, DuplicateNameError, InvalidMessageError, UnknownNameError
from pachyderm._messages import MessageTypes


@dataclass(frozen=True)
class Deposit:
    amount: int
    memo: str = ""


class Withdraw(pydantic.BaseModel):
    amount: int = pydantic.Field(gt=0)


def test_messages_round_trip_through_plain_data() -> None:
    types = MessageTypes("command", [Deposit, Withdraw])
    assert types.dump(Deposit(5, "rent")) == ("Deposit", {"amount": 5, "memo": "rent"})
    assert types.load("Deposit", {"amount": 5}) == Deposit(5)
    assert types.load("Withdraw", {"amount": 3}) == Withdraw(amount=3)


def test_explicit_names_decouple_the_wire_from_class_names() -> None:
    types = MessageTypes("event", {"bank.deposited.v1": Deposit})
    assert types.dump(Deposit(1)) == ("bank.deposited.v1", {"amount": 1, "memo": ""})
    assert types.names == ["bank.deposited.v1"]


def test_a_name_registered_twice_is_refused() -> None:
    types = MessageTypes("command", [Deposit])
    with pytest.raises(DuplicateNameError, match="'Deposit' is already registered"):
        types.register("Deposit", Withdraw)


def test_a_class_registered_under_two_names_is_refused() -> None:
    with pytest.raises(DuplicateNameError, match="already registered as 'a'"):
        MessageTypes("command", {"a": Deposit, "b": Deposit})


def test_only_dataclasses_and_models_are_messages() -> None:
    with pytest.raises(DefinitionError, match="neither a dataclass nor a pydantic model"):
        MessageTypes("command", [dict])


def test_unknown_names_and_types_are_typed_errors() -> None:
    types = MessageTypes("command", [Deposit])
    with pytest.raises(UnknownNameError, match="unknown command 'Steal'; registered: Deposit"):
        types.load("Steal", {})
    with pytest.raises(UnknownNameError, match="Withdraw is not a registered command"):
        types.dump(Withdraw(amount=1))
    with pytest.raises(UnknownNameError):
        types.load(["not", "a", "name"], {})  # type: ignore[arg-type]


def test_validation_errors_name_the_field_and_the_problem() -> None:
    types = MessageTypes("command", [Deposit, Withdraw])
    with pytest.raises(InvalidMessageError) as missing:
        types.load("Deposit", {"memo": "x"})
    assert [(p.location, p.problem) for p in missing.value.problems] == [
        ("amount", "Field required")
    ]
    with pytest.raises(InvalidMessageError, match=r"amount: Input should be greater than 0"):
        types.load("Withdraw", {"amount": -5})
    with pytest.raises(InvalidMessageError, match=r"invalid Deposit: amount: Input should be"):
        types.load("Deposit", {"amount": "lots"})
    with pytest.raises(InvalidMessageError, match="<root>"):
        types.load("Deposit", ["not", "a", "map"])
