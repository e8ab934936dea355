from dataclasses import dataclass

import pydantic
import pytest

from examples import bank
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


def problems_of(types: MessageTypes, name: str, data: object) -> list[tuple[str, str]]:
    with pytest.raises(InvalidMessageError) as invalid:
        types.load(name, data)
    return [(p.location, p.problem) for p in invalid.value.problems]


def test_a_strict_registry_names_each_unknown_field() -> None:
    types = MessageTypes("command", [Deposit, Withdraw], extra="forbid")
    # Read tolerantly, the misspelled memo would be the default "".
    assert problems_of(types, "Deposit", {"amount": 5, "mmo": "rent", "to": 1}) == [
        ("mmo", "Unknown field; the fields of Deposit are: amount, memo"),
        ("to", "Unknown field; the fields of Deposit are: amount, memo"),
    ]
    assert problems_of(types, "Withdraw", {"amout": 50}) == [
        ("amount", "Field required"),
        ("amout", "Unknown field; the fields of Withdraw are: amount"),
    ]
    assert types.load("Deposit", {"amount": 5, "memo": "rent"}) == Deposit(5, "rent")


def test_a_tolerant_registry_ignores_unknown_fields() -> None:
    types = MessageTypes("event", [Deposit, Withdraw])
    assert types.load("Deposit", {"amount": 5, "added_later": True}) == Deposit(5)
    assert types.load("Withdraw", {"amount": 5, "added_later": True}) == Withdraw(amount=5)


@dataclass(frozen=True)
class Lenient:
    __pydantic_config__ = pydantic.ConfigDict(extra="ignore")
    amount: int = 1


class LenientModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")
    amount: int = 1


class Keeping(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


class Forbidding(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


def test_a_type_that_sets_pydantics_extra_is_read_as_it_says() -> None:
    strict = MessageTypes("command", [Lenient, LenientModel, Keeping], extra="forbid")
    assert strict.load("Lenient", {"amount": 2, "old": 1}) == Lenient(2)
    assert strict.load("LenientModel", {"amount": 2, "old": 1}) == LenientModel(amount=2)
    assert strict.load("Keeping", {"old": 1}).model_extra == {"old": 1}
    tolerant = MessageTypes("event", [Forbidding])
    assert [location for location, _ in problems_of(tolerant, "Forbidding", {"x": 1})] == ["x"]


class Aliased(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True)
    amount: int = pydantic.Field(alias="amt")
    note: str = pydantic.Field("", validation_alias=pydantic.AliasChoices("note", "memo"))

    # pydantic's documented form; mypy types no decorator over a property.
    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def doubled(self) -> int:
        return 2 * self.amount


@pydantic.dataclasses.dataclass(frozen=True)
class AliasedData:
    amount: int = pydantic.Field(alias="amt")


def test_a_strict_registry_reads_aliases_and_what_it_wrote() -> None:
    types = MessageTypes("command", [Aliased, AliasedData], extra="forbid")
    assert types.load("Aliased", {"amt": 2, "memo": "m"}) == Aliased(amount=2, note="m")
    message = Aliased(amount=3)
    assert types.load(*types.dump(message)) == message  # with its computed field
    assert types.load("AliasedData", {"amt": 4}) == AliasedData(amt=4)
    assert [location for location, _ in problems_of(types, "Aliased", {"amt": 1, "x": 0})] == ["x"]


def test_an_entitys_commands_and_queries_are_strict_and_its_events_tolerant() -> None:
    account = bank.Account
    assert [p[0] for p in problems_of(account.command_types, "Deposit", {"amount": 1, "x": 1})] == [
        "x"
    ]
    assert account.event_types.load("Deposited", {"amount": 1, "x": 1}) == bank.Deposited(amount=1)
    assert account.query_types.extra == "forbid"
