"""Event stores: the port and its PostgreSQL and SQLite backends."""

from ._open import open_store
from ._port import EventStore
from ._postgres import PostgresEventStore
from ._records import (
    Change,
    CommitOutcome,
    Committed,
    Conflict,
    Duplicate,
    LoadedEntity,
    NewEffect,
    NewEvent,
    OutboxEntry,
    RecordedEvent,
    Snapshot,
)
from ._sqlite import SqliteEventStore

__all__ = [
    "Change",
    "CommitOutcome",
    "Committed",
    "Conflict",
    "Duplicate",
    "EventStore",
    "LoadedEntity",
    "NewEffect",
    "NewEvent",
    "OutboxEntry",
    "PostgresEventStore",
    "RecordedEvent",
    "Snapshot",
    "SqliteEventStore",
    "open_store",
]
