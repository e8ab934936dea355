"""The embedded event store: SQLite through the standard library's ``sqlite3``.

``sqlite3`` is synchronous, so each store owns one connection and one worker
thread that does all of its database work; the event loop only waits for
results. Commits and migrations take the write lock up front (``BEGIN
IMMEDIATE``), so the version check and the writes see the same database even
when other stores or processes write to the same file.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypeVar, TypeVarTuple

from .._errors import EntityTypeMismatchError, MigrationError, StoreError, StoreUnavailableError
from .._reference import Ref
from . import _sqlite_erasure as erasure
from . import _sqlite_listing as listing
from . import _sqlite_log as log
from . import _sqlite_quarantine as quarantine
from . import _sqlite_retention as retention
from . import _sqlite_timers as timers
from ._log_wakeups import LocalWakeups, LogWakeups
from ._migrations import Migration, migrations_for, pending
from ._quarantine import QuarantineStore
from ._records import (
    ERASED,
    ERASED_VERSION,
    Change,
    CommitOutcome,
    Committed,
    Conflict,
    Duplicate,
    Erasure,
    Fenced,
    ListedEntity,
    LoadedEntity,
    LoggedEvent,
    OutboxEntry,
    RecordedEvent,
    Snapshot,
    StoredTimer,
    TimerGone,
    decode_trace,
    encode_trace,
)
from ._retention import Retained, check_limit, check_retained
from ._sqlite_base import now_text as _now
from ._sqlite_base import text_time as _time
from ._sqlite_base import transaction as _transaction
from ._sqlite_quarantine import SqliteQuarantine

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# Failures worth retrying: another writer held the lock too long, or the file
# (disk, permissions, locking protocol) is in trouble.
_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_PROTOCOL,
}

_EVENTS_FROM = """
    SELECT entity_id, version, name, data, command_id, recorded_at, schema_version FROM events
     WHERE entity_id = ? AND version >= ? ORDER BY version LIMIT ?
"""
_HEAD = """
    SELECT e.entity_type, s.version, s.state, s.fingerprint, e.ended, e.version FROM entities e
      LEFT JOIN snapshots s ON s.entity_id = e.entity_id AND ?
     WHERE e.entity_id = ?
"""
_UPSERT_ENTITY = """
    INSERT INTO entities (entity_id, entity_type, version, updated_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (entity_id) DO UPDATE
       SET version = excluded.version, updated_at = excluded.updated_at
"""
_INSERT_EVENT = """
    INSERT INTO events (entity_id, version, name, data, command_id, recorded_at, schema_version)
    VALUES (?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_COMMAND = """
    INSERT INTO commands (entity_id, command_id, version, reply, recorded_at)
    VALUES (?, ?, ?, ?, ?)
"""
_INSERT_EFFECT = """
    INSERT INTO outbox
           (effect_id, entity_id, command_id, destination, payload, created_at, trace_context)
    VALUES (?, ?, ?, ?, ?, ?, ?)
"""
# A snapshot only ever moves forward.
_UPSERT_SNAPSHOT = """
    INSERT INTO snapshots (entity_id, version, state, taken_at, fingerprint)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (entity_id) DO UPDATE
       SET version = excluded.version, state = excluded.state, taken_at = excluded.taken_at,
           fingerprint = excluded.fingerprint
     WHERE snapshots.version < excluded.version
"""
_PENDING_EFFECTS = """
    SELECT effect_id, destination, payload, entity_id, command_id, created_at, attempts,
           trace_context
      FROM outbox
     WHERE published_at IS NULL AND created_at <= ? AND (retry_at IS NULL OR retry_at <= ?)
     ORDER BY position LIMIT ?
"""
_POSTPONE_EFFECT = """
    UPDATE outbox SET attempts = attempts + 1, retry_at = ?
     WHERE effect_id = ? AND published_at IS NULL
"""


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Present driver failures as Pachyderm's store errors."""
    try:
        yield
    except sqlite3.Error as error:
        # Errors raised by the sqlite3 module itself carry no SQLite code.
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None and (code & 0xFF) in _UNAVAILABLE:
            raise StoreUnavailableError(f"SQLite unavailable: {error}") from error
        raise StoreError(f"SQLite error: {error}") from error


def _use_wal(connection: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch a file to WAL, waiting while another connection holds it.

    SQLite answers a journal-mode change it cannot make at once with "database
    is locked" without calling the busy handler: several processes opening a
    fresh file together would fail.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            busy = getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _connect(path: str | os.PathLike[str], busy_timeout: float) -> sqlite3.Connection:
    # Autocommit mode: transactions are begun explicitly, never implicitly.
    connection = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        # WAL lets readers run beside the writer (an in-memory database
        # ignores it); FULL syncs every commit, so a success reply is durable.
        _use_wal(connection, busy_timeout)
        connection.execute("PRAGMA synchronous = FULL")
    except BaseException:
        connection.close()
        raise
    return connection


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into statements.

    ``executescript`` would commit the migration's transaction first, so the
    statements run one by one; ``complete_statement`` keeps semicolons inside
    comments, strings and trigger bodies from splitting a statement.
    """
    *pieces, tail = script.split(";")
    statement = ""
    for piece in pieces:
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""
    if (statement + tail).strip():
        yield statement + tail


def _apply_migration(connection: sqlite3.Connection, migration: Migration) -> None:
    try:
        for statement in _statements(migration.sql):
            connection.execute(statement)
    except sqlite3.Error as error:
        raise MigrationError(
            f"SQLite migration {migration.version} ({migration.name}) failed: {error}"
        ) from error
    connection.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        (migration.version, migration.name, _now()),
    )


def _migrate(connection: sqlite3.Connection) -> int:
    migrations = migrations_for("sqlite")
    # The write lock serialises concurrent migrators: each later one finds
    # the migrations already recorded and applies nothing.
    with _transaction(connection, "BEGIN IMMEDIATE"):
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        (applied,) = connection.execute(
            "SELECT coalesce(max(version), 0) FROM schema_migrations"
        ).fetchone()
        for migration in pending(migrations, applied):
            _apply_migration(connection, migration)
    return len(migrations)


def _recorded(row: Any) -> RecordedEvent:
    entity_id, version, name, data, command_id, recorded_at, schema_version = row
    return RecordedEvent(
        uuid.UUID(bytes=entity_id),
        version,
        name,
        data,
        command_id,
        _time(recorded_at),
        schema_version,
    )


def _history(
    connection: sqlite3.Connection, entity_id: uuid.UUID, from_version: int, limit: int | None
) -> list[RecordedEvent]:
    # SQLite reads a negative LIMIT as "no limit".
    rows = connection.execute(
        _EVENTS_FROM, (entity_id.bytes, from_version, -1 if limit is None else limit)
    )
    return [_recorded(row) for row in rows]


def _load(connection: sqlite3.Connection, ref: Ref, use_snapshot: bool) -> LoadedEntity:
    # One read transaction: the snapshot and the events come from one state.
    with _transaction(connection, "BEGIN"):
        head = connection.execute(_HEAD, (use_snapshot, ref.id.bytes)).fetchone()
        if head is None:
            return LoadedEntity(ref, None)
        stored_type, version, state, fingerprint, ended, stored = head
        if stored_type != ref.type:
            raise EntityTypeMismatchError(ref.id, stored_type, ref.type)
        if ended == ERASED:
            return LoadedEntity(ref, None, (), ERASED, ERASED_VERSION)
        snapshot = None if state is None else Snapshot(version, state, fingerprint)
        events = _history(connection, ref.id, (snapshot.version if snapshot else 0) + 1, None)
    return LoadedEntity(ref, snapshot, tuple(events), ended, stored if ended else None)


def _check(connection: sqlite3.Connection, change: Change) -> CommitOutcome | None:
    """The outcome of a change that must not be written, or None if it may commit."""
    entity_id = change.ref.id.bytes
    stored = connection.execute(
        "SELECT version, reply FROM commands WHERE entity_id = ? AND command_id = ?",
        (entity_id, change.command_id),
    ).fetchone()
    if stored is not None:
        return Duplicate(stored[1], stored[0])
    row = connection.execute(
        "SELECT entity_type, version, ended FROM entities WHERE entity_id = ?", (entity_id,)
    ).fetchone()
    if row is None:
        # Only a change creating the entity may find it missing.
        return None if change.expected_version == 0 else Conflict(0)
    entity_type, version, how = row
    if (over := erasure.ended(how, version)) is not None:
        return over
    if entity_type != change.ref.type or version != change.expected_version:
        return Conflict(version)
    return None


def _write(connection: sqlite3.Connection, change: Change, now: str) -> Committed:
    entity_id, command_id = change.ref.id.bytes, change.command_id
    connection.execute(_UPSERT_ENTITY, (entity_id, change.ref.type, change.new_version, now))
    connection.executemany(
        _INSERT_EVENT,
        [
            (
                entity_id,
                change.expected_version + offset,
                event.name,
                event.data,
                command_id,
                now,
                event.schema_version,
            )
            for offset, event in enumerate(change.events, start=1)
        ],
    )
    connection.execute(
        _INSERT_COMMAND, (entity_id, command_id, change.new_version, change.reply, now)
    )
    trace = encode_trace(change.trace)
    connection.executemany(
        _INSERT_EFFECT,
        [
            (
                effect.effect_id.bytes,
                entity_id,
                command_id,
                effect.destination,
                effect.payload,
                now,
                trace,
            )
            for effect in change.effects
        ],
    )
    timers.write_timers(connection, change, now)
    log.log_events(connection, change)
    if change.snapshot is not None:
        snapshot = change.snapshot
        connection.execute(
            _UPSERT_SNAPSHOT,
            (entity_id, snapshot.version, snapshot.state, now, snapshot.fingerprint),
        )
    if change.ends:
        erasure.end(connection, change, now)
    return Committed(change.new_version)


def _commit(connection: sqlite3.Connection, changes: Sequence[Change]) -> list[CommitOutcome]:
    now = _now()
    # Holding the write lock from the start, each check sees every write
    # before it, including earlier changes of this batch.
    refused_entities: set[uuid.UUID] = set()
    fenced_entities: set[uuid.UUID] = set()
    with _transaction(connection, "BEGIN IMMEDIATE"):
        outcomes: list[CommitOutcome] = []
        row_less = erasure.row_less(connection, changes)
        for change in changes:
            if change.ref.id in fenced_entities or quarantine.fenced(
                connection, change.ref.id, change.command_id
            ):
                refused: CommitOutcome | None = Fenced()
                fenced_entities.add(change.ref.id)
            elif change.ref.id in refused_entities:
                refused = Conflict(_version(connection, change.ref.id))
            else:
                refused = _check(connection, change)
            if refused is None and timers.fire_refused(connection, change, now):
                refused = TimerGone(_version(connection, change.ref.id))
            if refused is None and change.ref.id in row_less:
                outcomes.append(erasure.record_reply(connection, change, now))
            elif refused is None:
                outcomes.append(_write(connection, change, now))
            else:
                # Later changes to this entity were computed on top of this one.
                refused_entities.add(change.ref.id)
                outcomes.append(refused)
    return outcomes


def _version(connection: sqlite3.Connection, entity_id: uuid.UUID) -> int:
    row = connection.execute(
        "SELECT version FROM entities WHERE entity_id = ?", (entity_id.bytes,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _stored_replies(
    connection: sqlite3.Connection, commands: Sequence[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], Duplicate]:
    found = {}
    for entity_id, command_id in commands:
        row = connection.execute(
            "SELECT version, reply FROM commands WHERE entity_id = ? AND command_id = ?",
            (entity_id.bytes, command_id),
        ).fetchone()
        if row is not None:
            found[entity_id, command_id] = Duplicate(row[1], row[0])
    return found


def _versions(
    connection: sqlite3.Connection, entity_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    marks = ",".join("?" * len(entity_ids))
    rows = connection.execute(
        f"SELECT entity_id, CASE WHEN ended = 'erased' THEN {ERASED_VERSION} ELSE version END"
        f" FROM entities WHERE entity_id IN ({marks})",
        [entity_id.bytes for entity_id in entity_ids],
    )
    return {uuid.UUID(bytes=entity_id): version for entity_id, version in rows}


def _outbox_entry(row: Any) -> OutboxEntry:
    effect_id, destination, payload, entity_id, command_id, created_at, attempts, trace = row
    return OutboxEntry(
        uuid.UUID(bytes=effect_id),
        destination,
        payload,
        uuid.UUID(bytes=entity_id),
        command_id,
        _time(created_at),
        attempts,
        decode_trace(trace),
    )


def _pending_effects(
    connection: sqlite3.Connection, limit: int, older_than: float
) -> list[OutboxEntry]:
    written_by = (datetime.now(UTC) - timedelta(seconds=older_than)).isoformat(
        timespec="microseconds"
    )
    rows = connection.execute(_PENDING_EFFECTS, (written_by, _now(), limit))
    return [_outbox_entry(row) for row in rows]


def _postpone_effects(connection: sqlite3.Connection, delays: Mapping[uuid.UUID, float]) -> None:
    now = datetime.now(UTC)
    with _transaction(connection, "BEGIN IMMEDIATE"):
        connection.executemany(
            _POSTPONE_EFFECT,
            [
                ((now + timedelta(seconds=delay)).isoformat(timespec="microseconds"), key.bytes)
                for key, delay in delays.items()
            ],
        )


def _mark_published(connection: sqlite3.Connection, effect_ids: Sequence[uuid.UUID]) -> None:
    now = _now()
    with _transaction(connection, "BEGIN IMMEDIATE"):
        connection.executemany(
            "UPDATE outbox SET published_at = ? WHERE effect_id = ? AND published_at IS NULL",
            [(now, effect_id.bytes) for effect_id in effect_ids],
        )


class SqliteEventStore:
    """:class:`~pachyderm.store.EventStore` in one SQLite file (or in memory).

    Several stores, in one process or many, may share a file: SQLite's write
    lock serialises their commits.
    """

    def __init__(self, connection: sqlite3.Connection, worker: ThreadPoolExecutor) -> None:
        """Use :meth:`open`; ``connection`` belongs to the single thread of ``worker``."""
        self._connection = connection
        self._worker = worker
        self._closed = False
        self._wakeups = LocalWakeups()

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> Self:
        """Open (creating if needed) the database at ``path``; ``":memory:"`` is private.

        A writer finding the file locked waits up to ``busy_timeout`` seconds
        before failing with :class:`~pachyderm.StoreUnavailableError`.
        """
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pachyderm-sqlite")
        loop = asyncio.get_running_loop()
        try:
            with _translated_errors():
                connection = await loop.run_in_executor(worker, _connect, path, busy_timeout)
        except BaseException:
            worker.shutdown()
            raise
        return cls(connection, worker)

    async def _run(self, work: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        """Run ``work(connection, *args)`` on the store's thread."""
        if self._closed:
            raise StoreError("the SQLite event store is closed")
        loop = asyncio.get_running_loop()
        with _translated_errors():
            return await loop.run_in_executor(self._worker, work, self._connection, *args)

    async def migrate(self) -> int:
        """Apply the pending migrations; safe when several stores run it at once.

        Returns the schema version.
        """
        return await self._run(_migrate)

    async def load(self, ref: Ref, *, use_snapshot: bool = True) -> LoadedEntity:
        """The latest snapshot of ``ref`` and the events after it."""
        return await self._run(_load, ref, use_snapshot)

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        """Commit a batch in one transaction; one outcome per change, in order."""
        if not changes:
            return []
        outcomes = await self._run(_commit, list(changes))
        self._wakeups.committed(change.partition for change in changes if change.events)
        return outcomes

    async def recorded(
        self, commands: Sequence[tuple[uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, str], Duplicate]:
        """The stored replies of those ``(entity id, command id)`` pairs already committed."""
        if not commands:
            return {}
        return await self._run(_stored_replies, list(commands))

    async def versions(self, entity_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The current version of each entity that has one (new entities are absent)."""
        if not entity_ids:
            return {}
        return await self._run(_versions, list(entity_ids))

    async def history(
        self, entity_id: uuid.UUID, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Events of one entity from ``from_version`` on, oldest first."""
        return await self._run(_history, entity_id, from_version, limit)

    async def pending_effects(self, limit: int = 100, older_than: float = 0.0) -> list[OutboxEntry]:
        """Effects not yet marked published, oldest first, written over ``older_than`` s ago."""
        return await self._run(_pending_effects, limit, older_than)

    async def mark_published(self, effect_ids: Sequence[uuid.UUID]) -> None:
        """Record that these effects reached the broker."""
        if effect_ids:
            await self._run(_mark_published, list(effect_ids))

    async def postpone_effects(self, delays: Mapping[uuid.UUID, float]) -> None:
        """Count a failed publish of each effect and hold it back for its delay."""
        if delays:
            await self._run(_postpone_effects, dict(delays))

    async def list_entities(
        self,
        entity_type: str,
        *,
        after: uuid.UUID | tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
        by_change: bool = False,
    ) -> list[ListedEntity]:
        return await self._run(listing.list_entities, entity_type, after, limit, by_change)

    async def read_log(self, partition: int, after: int, limit: int) -> list[LoggedEvent]:
        """The events of ``partition``'s log after position ``after``, in order."""
        return await self._run(log.read_log, partition, after, limit)

    async def log_heads(self) -> dict[int, int]:
        """The last position of each partition's log that has one."""
        return await self._run(log.log_heads)

    async def due_timers(
        self, partition: int, until: datetime, limit: int, *, skip: Collection[uuid.UUID] = ()
    ) -> list[StoredTimer]:
        """The pending timers of ``partition`` to try by ``until``, soonest first, none of
        the entities in ``skip``."""
        return await self._run(timers.due_timers, partition, until, limit, list(skip))

    async def entity_timers(self, entity_id: uuid.UUID) -> list[StoredTimer]:
        """The pending timers of one entity, soonest first."""
        return await self._run(timers.entity_timers, entity_id)

    async def postpone_timers(
        self, delays: Mapping[tuple[uuid.UUID, str], float]
    ) -> dict[tuple[uuid.UUID, str], int]:
        """Count a try of each timer and hold it back for its delay; their attempts now."""
        if not delays:
            return {}
        return await self._run(timers.postpone_timers, dict(delays))

    async def hold_timers(self, keys: Sequence[tuple[uuid.UUID, str]]) -> None:
        """Hold these timers until released (no try for a century)."""
        if keys:
            await self._run(timers.hold_timers, list(keys))

    async def release_timer(self, entity_id: uuid.UUID, key: str) -> bool:
        """Let a held timer fire again (attempts from 0, next try at its due time)."""
        return await self._run(timers.release_timer, entity_id, key)

    async def count_timers(self) -> int:
        """How many timers are pending in all."""
        return await self._run(timers.count_timers)

    def log_wakeups(self) -> LogWakeups:
        """Wake-ups of this store's own commits: readers in another process poll."""
        return self._wakeups

    async def close(self) -> None:
        """Close the connection and stop the store's thread; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        try:
            # Queued behind any work still running, so that work finishes first.
            await asyncio.get_running_loop().run_in_executor(self._worker, self._connection.close)
        finally:
            # The thread is idle by now: joining it does not hold up the loop.
            self._worker.shutdown()

    async def prune(self, retained: Retained, older_than: float, limit: int) -> int:
        """Delete at most ``limit`` of the oldest ``retained`` rows older than ``older_than`` s."""
        return await self._run(
            retention.prune, check_retained(retained), older_than, check_limit(limit)
        )

    async def count_prunable(self, retained: Retained, older_than: float) -> int:
        """How many ``retained`` rows are older than ``older_than`` seconds."""
        return await self._run(retention.count_prunable, check_retained(retained), older_than)

    async def erase(self, ref: Ref) -> Erasure:
        """Delete everything stored of ``ref`` and leave its tombstone."""
        return await self._run(erasure.erase, ref, _now())

    async def prune_ended(self, limit: int) -> int:
        """Delete at most ``limit`` events of ended entities up to their final snapshot."""
        return await self._run(erasure.prune_ended, check_limit(limit))

    async def count_prunable_ended(self) -> int:
        """How many events :meth:`prune_ended` would delete now."""
        return await self._run(erasure.count_prunable_ended)

    def quarantine_store(self) -> QuarantineStore:
        """The namespace's poison commands (migration 0014), on this store's thread."""
        return SqliteQuarantine(self)
