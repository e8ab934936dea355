"""Entity references: an entity type name plus a UUID that is unique across all types.

On the wire an id is only ever its canonical text (lower case, hyphenated):
the commands exchange hashes the routing key as a string, so two spellings
of one id would land on two partitions and be served by two workers at once.
:func:`parse_wire_id` accepts nothing else; :func:`parse_entity_id` (for ids
typed by people) accepts any standard form, and whatever it returns is a
:class:`uuid.UUID`, which always prints canonically.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from ._errors import DefinitionError, InvalidEntityIdError

# Fixed forever: changing it would move every entity addressed by a natural key.
KEY_NAMESPACE = uuid.UUID("6b1f3f0e-5d0c-4b8e-9a55-2f6b4c6f7a10")

_TYPE_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,62}")


def check_type_name(name: str) -> str:
    """Return ``name`` if it is a valid entity type name, else raise :class:`DefinitionError`."""
    if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
        raise DefinitionError(
            f"entity type name {name!r} must match {_TYPE_NAME.pattern} "
            "(lower case, starts with a letter, at most 63 characters)"
        )
    return name


def entity_id(type_name: str, key: str) -> uuid.UUID:
    """Derive the stable id of the entity of ``type_name`` known by a natural ``key``.

    The type takes part in the derivation, so ``account "alice"`` and
    ``user "alice"`` get different ids: ids stay unique across types.
    """
    return uuid.uuid5(KEY_NAMESPACE, f"{check_type_name(type_name)}:{key}")


def parse_entity_id(text: Any) -> uuid.UUID:
    """Parse a UUID given as text (any standard form) or a :class:`uuid.UUID`."""
    if isinstance(text, uuid.UUID):
        return text
    if isinstance(text, str) and len(text) <= 45:
        try:
            return uuid.UUID(text)
        except ValueError:
            pass
    raise InvalidEntityIdError(f"entity id must be a UUID, got {_preview(text)}")


CANONICAL_ID_EXAMPLE = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def parse_wire_id(text: Any) -> uuid.UUID:
    """Parse an id as a routing key must spell it: a UUID in canonical form, nothing else."""
    if isinstance(text, str) and len(text) == len(CANONICAL_ID_EXAMPLE):
        try:
            parsed = uuid.UUID(text)
        except ValueError:
            pass
        else:
            if str(parsed) == text:
                return parsed
    raise InvalidEntityIdError(
        "entity id must be a UUID in canonical form "
        f"(lower case, hyphenated: {CANONICAL_ID_EXAMPLE}), got {_preview(text)}"
    )


def _preview(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


@dataclass(frozen=True, slots=True, order=True)
class Ref:
    """Address of one entity: its type name and its id.

    >>> Ref.from_key("account", "alice").id == entity_id("account", "alice")
    True
    """

    type: str
    id: uuid.UUID

    def __post_init__(self) -> None:
        check_type_name(self.type)
        if not isinstance(self.id, uuid.UUID):
            raise InvalidEntityIdError(f"entity id must be a UUID, got {_preview(self.id)}")

    @classmethod
    def parse(cls, type_name: str, id_text: Any) -> Ref:
        """Build a reference from an id given as text; raises :class:`InvalidEntityIdError`."""
        return cls(type_name, parse_entity_id(id_text))

    @classmethod
    def from_key(cls, type_name: str, key: str) -> Ref:
        """Reference the entity of ``type_name`` known by the natural ``key`` (uuid5)."""
        return cls(type_name, entity_id(type_name, key))

    def __str__(self) -> str:
        return f"{self.type}/{self.id}"
