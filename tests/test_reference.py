import uuid

import pytest

from pachyderm import DefinitionError, InvalidEntityIdError, Ref, entity_id
from pachyderm._reference import parse_wire_id


def test_natural_keys_give_stable_ids() -> None:
    assert entity_id("account", "alice") == entity_id("account", "alice")
    # Pinned: changing the derivation would orphan every stored entity.
    assert entity_id("account", "alice") == uuid.UUID("7ec96737-a4d8-5815-beb6-fa8beccf5517")
    assert Ref.from_key("account", "alice") == Ref("account", entity_id("account", "alice"))


def test_the_same_key_in_two_types_gives_two_ids() -> None:
    assert entity_id("account", "alice") != entity_id("user", "alice")


@pytest.mark.parametrize(
    "text",
    [
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "3F2504E04F8911D39A0C0305E82C3301",
        "{3f2504e0-4f89-11d3-9a0c-0305e82c3301}",
        "urn:uuid:3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    ],
)
def test_ids_parse_from_standard_forms(text: str) -> None:
    assert Ref.parse("counter", text).id == uuid.UUID("3f2504e0-4f89-11d3-9a0c-0305e82c3301")


@pytest.mark.parametrize("bad", ["", "alice", "3f2504e0-4f89-11d3", "x" * 10_000, 42, None, b"ab"])
def test_a_malformed_id_is_a_clear_typed_error(bad: object) -> None:
    with pytest.raises(InvalidEntityIdError, match="entity id must be a UUID"):
        Ref.parse("counter", bad)


CANONICAL = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def test_the_wire_takes_an_id_in_canonical_form() -> None:
    assert parse_wire_id(CANONICAL) == uuid.UUID(CANONICAL)


@pytest.mark.parametrize(
    "spelling",
    [
        CANONICAL.upper(),
        "3f2504e0-4f89-11d3-9a0c-0305E82C3301",
        CANONICAL.replace("-", ""),
        "{" + CANONICAL + "}",
        "urn:uuid:" + CANONICAL,
        " " + CANONICAL,
        CANONICAL + "\n",
    ],
)
def test_the_wire_refuses_any_other_spelling_of_an_id(spelling: str) -> None:
    # The commands exchange hashes the text: another spelling is another partition.
    assert uuid.UUID(spelling.strip()) == uuid.UUID(CANONICAL)
    with pytest.raises(InvalidEntityIdError) as refused:
        parse_wire_id(spelling)
    assert "canonical form (lower case, hyphenated: 3f2504e0-" in str(refused.value)
    assert repr(spelling) in str(refused.value)


@pytest.mark.parametrize("bad", ["", "alice", "x" * 36, "x" * 10_000, 42, None, b"ab"])
def test_the_wire_refuses_what_is_no_uuid_at_all(bad: object) -> None:
    with pytest.raises(InvalidEntityIdError, match="entity id must be a UUID in canonical form"):
        parse_wire_id(bad)


def test_a_ref_refuses_a_non_uuid_id() -> None:
    with pytest.raises(InvalidEntityIdError):
        Ref("counter", "3f2504e0-4f89-11d3-9a0c-0305e82c3301")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "Counter", "1counter", "a b", "x" * 64])
def test_type_names_are_checked(bad: str) -> None:
    with pytest.raises(DefinitionError, match="entity type name"):
        Ref.from_key(bad, "k")


def test_refs_print_readably() -> None:
    ref = Ref.parse("counter", "3f2504e0-4f89-11d3-9a0c-0305e82c3301")
    assert str(ref) == "counter/3f2504e0-4f89-11d3-9a0c-0305e82c3301"
