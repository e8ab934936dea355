"""Events as older code stored them, for tests of upcasters (see :func:`given`).

Invariant: a :class:`StoredEvent` goes the way a stored event goes on a cold load:
its data is encoded as the store keeps it, then read by the current code through
the entity's upcasters (:meth:`EntityType.decode_events`), so a test sees what a
worker sees, no more and no less.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import _codec
from .._entity_type import EntityType


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored by an older version of the code: its stored ``name`` (an old
    name too), its ``data`` as the plain dict the store holds, and the
    ``schema_version`` of its type it was written with.

    ::

        given(Account, StoredEvent("Opened", {"owner": "ann"}, schema_version=1)).then(
            events=[Opened(holder="ann")], state=AccountState(owner="ann")
        )
    """

    name: str
    data: Mapping[str, Any]
    schema_version: int = 1

    def read(self, entity_type: EntityType[Any]) -> list[Any]:
        """The events ``entity_type``'s current code sees in this one (upcast)."""
        stored = _codec.encode(dict(self.data))
        return entity_type.decode_events(self.name, stored, self.schema_version)
