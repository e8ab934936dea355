"""Schema evolution of an entity's messages: versions, aliases, upcaster chains."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import pydantic
import pytest

from pachyderm import (
    DecodeError,
    DefinitionError,
    DuplicateNameError,
    Entity,
    HandlerError,
    NewerSchemaError,
    UnknownNameError,
    upcaster,
)
from pachyderm._codec import encode
from pachyderm._entity_type import EntityType, UntrustedSnapshotError
from pachyderm.cli._inspect import _event_data
from pachyderm.store import LoadedEntity, RecordedEvent, Snapshot


@dataclass
class Deposited:
    schema_version: ClassVar[int] = 3
    schema_aliases: ClassVar[tuple[str, ...]] = ("MoneyIn",)
    cents: int
    note: str = ""


@dataclass
class StreetChanged:
    street: str


@dataclass
class CityChanged:
    city: str


@dataclass
class Deposit:
    schema_version: ClassVar[int] = 2
    cents: int


@upcaster("Deposited", 1)
def euros_to_cents(data: dict[str, Any]) -> dict[str, Any]:
    return {"cents": data["euros"] * 100}


@upcaster(Deposited, 2)
def with_note(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "note": "upcast"}


@upcaster("AddressChanged", 1)
def split_address(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("StreetChanged", {"street": data["street"]}), ("CityChanged", {"city": data["city"]})]


@upcaster("Pinged", 1)
def drop_pings(data: dict[str, Any]) -> None:
    return None


@upcaster(Deposit, 1)
def deposit_in_cents(data: dict[str, Any]) -> dict[str, Any]:
    return {"cents": data["euros"] * 100}


class Account(Entity[dict[str, Any]]):
    commands = (Deposit,)
    events = (Deposited, StreetChanged, CityChanged)
    upcasters = (euros_to_cents, with_note, split_address, drop_pings, deposit_in_cents)

    def init(self) -> dict[str, Any]:
        return {"cents": 0, "address": {}}

    def handle(self, message: Any, state: dict[str, Any]) -> list[Any]:
        return [Deposited(message.cents)]

    def update(self, event: Any, state: dict[str, Any]) -> dict[str, Any]:
        match event:
            case Deposited(cents=cents):
                return {**state, "cents": state["cents"] + cents}
            case StreetChanged(street=street):
                return {**state, "address": {**state["address"], "street": street}}
            case CityChanged(city=city):
                return {**state, "address": {**state["address"], "city": city}}
        return state


ACCOUNT = EntityType(Account())


def decode(name: str, data: dict[str, Any], version: int = 1) -> list[Any]:
    return ACCOUNT.decode_events(name, encode(data), version)


def test_an_old_event_is_upcast_through_the_whole_chain() -> None:
    assert decode("Deposited", {"euros": 2}, 1) == [Deposited(200, "upcast")]
    assert decode("Deposited", {"cents": 5}, 2) == [Deposited(5, "upcast")]
    assert decode("Deposited", {"cents": 5, "note": "now"}, 3) == [Deposited(5, "now")]


def test_an_event_stored_under_an_old_name_reads_as_the_renamed_type() -> None:
    assert decode("MoneyIn", {"euros": 1}, 1) == [Deposited(100, "upcast")]


def test_an_upcaster_may_split_an_event_of_a_removed_type_or_drop_one() -> None:
    split = decode("AddressChanged", {"street": "Main St", "city": "Ghent"})
    assert split == [StreetChanged("Main St"), CityChanged("Ghent")]
    assert decode("Pinged", {}) == []


def test_decode_event_refuses_what_does_not_read_as_exactly_one() -> None:
    with pytest.raises(DecodeError, match="2 messages"):
        ACCOUNT.decode_event("AddressChanged", encode({"street": "a", "city": "b"}))
    assert ACCOUNT.decode_event("Deposited", encode({"euros": 1})) == Deposited(100, "upcast")


def test_events_newer_than_the_code_are_refused_as_newer_schema() -> None:
    with pytest.raises(NewerSchemaError) as newer:
        decode("Deposited", {"cents": 1}, 4)
    assert (newer.value.name, newer.value.schema_version) == ("Deposited", 4)
    with pytest.raises(NewerSchemaError, match="unknown"):
        decode("Withdrawn", {"cents": 1}, 1)
    with pytest.raises(NewerSchemaError):
        decode("AddressChanged", {"street": "a", "city": "b"}, 2)


def test_new_events_are_encoded_with_their_current_version() -> None:
    assert ACCOUNT.encode_event(Deposited(1)).schema_version == 3
    assert ACCOUNT.encode_event(CityChanged("Ghent")).schema_version == 1


def test_replay_folds_upcast_events_and_split_ones_in_order() -> None:
    ref = Account.ref("alice")
    now = datetime.now(UTC)
    stored = [
        RecordedEvent(ref.id, 1, "MoneyIn", encode({"euros": 1}), "c1", now, 1),
        RecordedEvent(ref.id, 2, "AddressChanged", encode({"street": "s", "city": "c"}), "c2", now),
        RecordedEvent(ref.id, 3, "Pinged", encode({}), "c3", now),
        RecordedEvent(ref.id, 4, "Deposited", encode({"cents": 1, "note": ""}), "c4", now, 3),
    ]
    state = ACCOUNT.replay(LoadedEntity(ref, None, stored))
    assert state == {"cents": 101, "address": {"street": "s", "city": "c"}}


def test_commands_are_upcast_on_receipt() -> None:
    assert Account.command_types.load_one("Deposit", {"euros": 3}, 1) == Deposit(300)
    assert Account.command_types.load_one("Deposit", {"cents": 3}, 2) == Deposit(3)
    with pytest.raises(NewerSchemaError):
        Account.command_types.load_one("Deposit", {"cents": 3}, 3)
    with pytest.raises(UnknownNameError):
        Account.command_types.load_one("Withdraw", {"cents": 3}, 1)


def test_an_upcaster_that_raises_or_returns_nonsense_is_a_handler_error() -> None:
    with pytest.raises(HandlerError, match="KeyError"):
        decode("Deposited", {"wrong": 1}, 1)

    @upcaster("Old", 1)
    def nonsense(data: dict[str, Any]) -> Any:
        return 42

    broken = EntityType(_entity(upcasters=[nonsense])())
    with pytest.raises(HandlerError, match="returned 42"):
        broken.decode_events("Old", encode({}), 1)


def _entity(**attributes: Any) -> type[Entity[Any]]:
    return type("Probe", (Account,), attributes)


def test_definitions_are_checked_when_the_class_is_defined() -> None:
    @upcaster("Deposited", 3)
    def beyond(data: dict[str, Any]) -> dict[str, Any]:
        return data

    with pytest.raises(DefinitionError, match="gap"):
        _entity(upcasters=[euros_to_cents, upcaster("Deposited", 3)(lambda d: d)])
    with pytest.raises(DefinitionError, match="current version or later"):
        _entity(upcasters=[euros_to_cents, with_note, beyond])
    with pytest.raises(DefinitionError, match="end at version 2"):
        _entity(upcasters=[euros_to_cents])
    with pytest.raises(DuplicateNameError, match="two upcasters"):
        _entity(upcasters=[euros_to_cents, euros_to_cents, with_note])
    with pytest.raises(DefinitionError, match="old name"):
        _entity(upcasters=[upcaster("MoneyIn", 1)(lambda d: d)])
    with pytest.raises(DefinitionError, match="@upcaster"):
        _entity(upcasters=[lambda d: d])
    with pytest.raises(DefinitionError, match="neither event nor command"):
        _entity(upcasters=[upcaster(Exception, 1)(lambda d: d)])
    with pytest.raises(DefinitionError, match="1 or later"):
        upcaster("Deposited", 0)


def test_aliases_are_checked_against_names_and_each_other() -> None:
    @dataclass
    class Credited:
        schema_aliases: ClassVar[tuple[str, ...]] = ("MoneyIn",)
        cents: int

    @dataclass
    class Renamed:
        schema_aliases: ClassVar[tuple[str, ...]] = ("CityChanged",)
        cents: int

    with pytest.raises(DuplicateNameError, match="declared by both"):
        _entity(events=[Deposited, Credited])
    with pytest.raises(DuplicateNameError, match="registered name"):
        _entity(events=[CityChanged, Renamed])
    with pytest.raises(DuplicateNameError, match="old name"):
        _entity(events={"Deposited": Deposited, "MoneyIn": CityChanged})


def test_versions_must_be_declared_as_class_variables() -> None:
    @dataclass
    class AsField:
        schema_version: int = 2

    class AsModelField(pydantic.BaseModel):
        schema_version: int = 2

    @dataclass
    class Zero:
        schema_version: ClassVar[int] = 0

    for cls in (AsField, AsModelField, Zero):
        with pytest.raises(DefinitionError, match="schema_version"):
            _entity(events=[cls], upcasters=[])
    with pytest.raises(DefinitionError, match="update_version"):
        _entity(update_version=0)


def test_a_pydantic_model_declares_its_version_as_a_class_variable() -> None:
    class Opened(pydantic.BaseModel):
        schema_version: ClassVar[int] = 2
        owner: str

    probe = EntityType(
        _entity(events=[Opened], upcasters=[upcaster(Opened, 1)(lambda d: {"owner": d["who"]})])()
    )
    assert probe.decode_events("Opened", encode({"who": "ann"}), 1) == [Opened(owner="ann")]


def test_snapshots_are_trusted_only_when_taken_by_the_same_state_and_fold() -> None:
    @dataclass
    class State:
        schema_version: ClassVar[int] = 2
        cents: int = 0

    assert ACCOUNT.fingerprint == "state=1;update=1"
    assert ACCOUNT.trusts(Snapshot(1, b"", None))  # taken before fingerprints: 1/1
    assert ACCOUNT.trusts(Snapshot(1, b"", "state=1;update=1"))
    bumped = EntityType(_entity(update_version=2)())
    assert bumped.fingerprint == "state=1;update=2"
    assert not bumped.trusts(Snapshot(1, b"", None))
    typed = EntityType(_entity(state_type=State)())
    assert typed.fingerprint == "state=2;update=1"
    assert typed.snapshot(3, State(5)) == Snapshot(3, encode({"cents": 5}), "state=2;update=1")
    ref = Account.ref("bob")
    with pytest.raises(UntrustedSnapshotError):
        bumped.replay(LoadedEntity(ref, Snapshot(1, encode({"cents": 1}), None)))


def test_the_stored_names_that_may_read_as_a_type_include_old_and_upcast_names() -> None:
    evolution = Account.event_types.evolution
    assert evolution.stored_names(["CityChanged"]) == {
        "CityChanged",
        "Deposited",
        "MoneyIn",
        "AddressChanged",
        "Pinged",
    }
    assert "StreetChanged" not in evolution.stored_names(["CityChanged"])


def test_inspect_shows_each_event_as_the_current_code_reads_it() -> None:
    now = datetime.now(UTC)
    ref = Account.ref("inspected")

    def shown(name: str, data: dict[str, Any], version: int) -> Any:
        event = RecordedEvent(ref.id, 1, name, encode(data), "c", now, version)
        return _event_data(event, ACCOUNT)

    assert shown("MoneyIn", {"euros": 1}, 1) == [
        {"name": "Deposited", "data": {"cents": 100, "note": "upcast"}}
    ]
    assert shown("Deposited", {"cents": 3, "note": "n"}, 3) == {"cents": 3, "note": "n"}
    assert shown("AddressChanged", {"street": "s", "city": "c"}, 1) == [
        {"name": "StreetChanged", "data": {"street": "s"}},
        {"name": "CityChanged", "data": {"city": "c"}},
    ]
    assert shown("Pinged", {}, 1) == []
