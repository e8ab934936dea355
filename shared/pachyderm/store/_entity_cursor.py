"""A listing's cursor as text, for those who hand it on (the gateway's next link, the CLI).

By id it is the entity id; by last change ``<updated_at>,<id>`` (ISO 8601 with its
offset): :meth:`~pachyderm.store.EventStore.list_entities`'s ``after``, written out.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from ._records import ListedEntity

Cursor = uuid.UUID | tuple[datetime, uuid.UUID]


def cursor_text(entity: ListedEntity, *, by_change: bool) -> str:
    """The cursor of the page after ``entity``, as text."""
    if by_change:
        return f"{entity.updated_at.isoformat()},{entity.entity_id}"
    return str(entity.entity_id)


def parse_cursor(text: str, *, by_change: bool) -> Cursor:
    """The cursor ``text`` (as :func:`cursor_text` writes it); ``ValueError`` if it is none."""
    try:
        if not by_change:
            return uuid.UUID(text)
        time, _, identifier = text.rpartition(",")
        at = datetime.fromisoformat(time)
        if at.tzinfo is not None:
            return at, uuid.UUID(identifier)
    except ValueError:
        pass
    shape = "<updated_at>,<id>" if by_change else "an entity id"
    raise ValueError(f"a cursor {'by change' if by_change else 'by id'} is {shape}, not {text!r}")
