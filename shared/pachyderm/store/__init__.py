"""Event stores: the port and its PostgreSQL and SQLite backends.

:class:`PostgresEventStore` is imported on first use, and asyncpg with it:
the embedded mode (SQLite) never loads that library.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ._log_wakeups import LocalWakeups, LogWakeups, NoWakeups
from ._open import open_store
from ._port import EventStore
from ._quarantine import (
    HasQuarantine,
    NotQuarantinedError,
    Parked,
    Quarantined,
    QuarantineStore,
)
from ._records import (
    ENDED,
    ERASED,
    ERASED_VERSION,
    Change,
    CommitOutcome,
    Committed,
    Conflict,
    Duplicate,
    Ended,
    Erasure,
    Fenced,
    ListedEntity,
    LoadedEntity,
    LoggedEvent,
    NewEffect,
    NewEvent,
    OutboxEntry,
    RecordedEvent,
    Snapshot,
    StoredTimer,
    TimerFire,
    TimerGone,
    TimerWrite,
    event_id,
)
from ._retention import Retained
from ._shard_map import Shard, ShardMap, ShardMapError
from ._sqlite import SqliteEventStore

if TYPE_CHECKING:
    from ._postgres import PostgresEventStore
    from ._sharded import ShardedEventStore
else:
    # Hidden from type checkers, which then still report a misspelt name.
    __getattr__ = lazy_names(
        __name__, {"PostgresEventStore": "._postgres", "ShardedEventStore": "._sharded"}
    )

__all__ = [
    "ENDED",
    "ERASED",
    "ERASED_VERSION",
    "Change",
    "CommitOutcome",
    "Committed",
    "Conflict",
    "Duplicate",
    "Ended",
    "Erasure",
    "EventStore",
    "Fenced",
    "HasQuarantine",
    "ListedEntity",
    "LoadedEntity",
    "LocalWakeups",
    "LogWakeups",
    "LoggedEvent",
    "NewEffect",
    "NewEvent",
    "NoWakeups",
    "NotQuarantinedError",
    "OutboxEntry",
    "Parked",
    "PostgresEventStore",
    "QuarantineStore",
    "Quarantined",
    "RecordedEvent",
    "Retained",
    "Shard",
    "ShardMap",
    "ShardMapError",
    "ShardedEventStore",
    "Snapshot",
    "SqliteEventStore",
    "StoredTimer",
    "TimerFire",
    "TimerGone",
    "TimerWrite",
    "event_id",
    "open_store",
]
