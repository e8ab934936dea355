"""Listing the entities of a type in the SQLite store: the same rules as PostgreSQL's
(:mod:`._postgres_listing`, migration 0009): a keyset read by id through the index
``entities_by_type`` (entity_type, entity_id), whose columns no commit changes; by
last change without an index on ``updated_at``, which every commit would rewrite.

Ids are 16-byte blobs, which SQLite compares as bytes: the order PostgreSQL gives
UUIDs. Times are fixed-width UTC text (``_sqlite_base``), which sorts as time does.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime

from ._postgres_listing import check_cursor
from ._records import ListedEntity
from ._sqlite_base import text_time, time_text

_COLUMNS = "SELECT entity_id, version, updated_at FROM entities WHERE entity_type = ?"
# An erased entity is not listed: PostgreSQL's tombstone is at version -2 (0013); here
# it keeps its version and says so in ended.
_WRITTEN = " AND version > 0 AND ended IS NOT 'erased'"
_BY_ID = _WRITTEN + " AND entity_id > ? ORDER BY entity_id LIMIT ?"
_BY_CHANGE = (
    _WRITTEN + " AND (updated_at, entity_id) > (?, ?) ORDER BY updated_at, entity_id LIMIT ?"
)
# Before any entity: an empty blob sorts before every id, empty text before every time.
_START = b""


def list_entities(
    connection: sqlite3.Connection,
    entity_type: str,
    after: uuid.UUID | tuple[datetime, uuid.UUID] | None,
    limit: int,
    by_change: bool,
) -> list[ListedEntity]:
    check_cursor(after, by_change)
    arguments: tuple[object, ...]
    if isinstance(after, tuple):
        arguments = (entity_type, time_text(after[0]), after[1].bytes, limit)
    elif by_change:
        arguments = (entity_type, "", _START, limit)
    else:
        arguments = (entity_type, _START if after is None else after.bytes, limit)
    rows = connection.execute(_COLUMNS + (_BY_CHANGE if by_change else _BY_ID), arguments)
    return [
        ListedEntity(uuid.UUID(bytes=entity_id), version, text_time(updated_at))
        for entity_id, version, updated_at in rows
    ]
