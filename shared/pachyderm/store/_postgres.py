"""The production event store: PostgreSQL through asyncpg.

Each namespace lives in its own schema, so several isolated fleets can share
one database. A whole batch commits in one round trip through the
``pachyderm_commit`` function installed by the migrations.
"""

from __future__ import annotations

import re
import ssl
import uuid
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from .._errors import EntityTypeMismatchError, MigrationError, StoreError, StoreUnavailableError
from .._reference import Ref
from . import _postgres_erasure as erasure
from . import _postgres_listing as listing
from . import _postgres_one_change as one_change
from . import _postgres_retention as retention
from . import _postgres_timers as timers
from ._log_wakeups import LogWakeups
from ._migrations import migrations_for, pending
from ._postgres_quarantine import PostgresQuarantine
from ._postgres_wakeups import LogListener, LogNotifier
from ._quarantine import QuarantineStore
from ._records import (
    ENDED,
    ERASED,
    ERASED_VERSION,
    HELD_FOR,
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
    OutboxEntry,
    RecordedEvent,
    Snapshot,
    StoredTimer,
    TimerGone,
    decode_trace,
    encode_trace,
)
from ._retention import Retained, check_limit, check_retained

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# A batch commits through pachyderm_commit_fenced (migration 0017), unless it is one
# change the one-change statement commits (0018, _postgres_one_change): the work of
# pachyderm_commit_batch (0016), one function that locks the batch's entity rows once
# and decides every change on that read (the version check and the command-id inbox,
# refusals for ended and erased entities and for fires of gone timers; then writes the
# entities, events, command replies, effects with their trace context, snapshots,
# timers, the log's positions and entity ends), refused as a whole (_FENCED) if it
# would commit a change to a parked entity.
_COMMIT = (
    "SELECT outcome, version, reply FROM pachyderm_commit_fenced("
    + ", ".join(f"${n}" for n in range(1, 29))
    + ")"
)
_FENCED = "PX001"  # its DETAIL: the fenced changes' positions, 1-based
_LOG = """
    SELECT l.partition, l.position, n.entity_type, e.entity_id, e.version, e.name, e.data,
           e.command_id, e.recorded_at, e.schema_version
      FROM event_log l
      JOIN events e ON e.entity_id = l.entity_id AND e.version = l.version
      JOIN entities n ON n.entity_id = l.entity_id
     WHERE l.partition = $1 AND l.position > $2
     ORDER BY l.position LIMIT $3
"""
_EVENTS_FROM = """
    SELECT entity_id, version, name, data, command_id, recorded_at, schema_version FROM events
     WHERE entity_id = $1 AND version >= $2 ORDER BY version LIMIT $3
"""


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"schema name {schema!r} must match {_SCHEMA_NAME.pattern}")
    return schema


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    """Present driver failures as Pachyderm's store errors."""
    try:
        yield
    except ssl.SSLCertVerificationError as error:
        # Not "unavailable": trying again cannot help until the settings change.
        raise StoreError(f"PostgreSQL's TLS certificate was not accepted: {error}") from error
    # InternalClientError: a pooled connection whose backend was terminated while
    # idle fails so until asyncpg notices it closed; it is an outage, not a bug.
    except (
        OSError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        asyncpg.PostgresConnectionError,
    ) as error:
        raise StoreUnavailableError(f"PostgreSQL unavailable: {error}") from error
    except asyncpg.PostgresError as error:
        raise StoreError(f"PostgreSQL error: {error}") from error


def _recorded(row: Any) -> RecordedEvent:
    return RecordedEvent(
        row["entity_id"],
        row["version"],
        row["name"],
        row["data"],
        row["command_id"],
        row["recorded_at"],
        row["schema_version"],
    )


def _commit_arguments(changes: Sequence[Change]) -> list[list[Any]]:
    """Flatten changes into the parallel arrays ``pachyderm_commit`` takes."""
    columns: list[list[Any]] = [[] for _ in range(13)]
    (
        ids,
        types,
        expected,
        command_ids,
        replies,
        event_counts,
        effect_counts,
        snapshots,
        event_names,
        event_data,
        effect_ids,
        destinations,
        payloads,
    ) = columns
    for change in changes:
        ids.append(change.ref.id)
        types.append(change.ref.type)
        expected.append(change.expected_version)
        command_ids.append(change.command_id)
        replies.append(change.reply)
        event_counts.append(len(change.events))
        effect_counts.append(len(change.effects))
        snapshots.append(change.snapshot.state if change.snapshot else None)
        for event in change.events:
            event_names.append(event.name)
            event_data.append(event.data)
        for effect in change.effects:
            effect_ids.append(effect.effect_id)
            destinations.append(effect.destination)
            payloads.append(effect.payload)
    return columns


def commit_arguments(changes: Sequence[Change]) -> list[Any]:
    """The arguments of ``pachyderm_commit_batch`` for ``changes`` (sorted by entity id)."""
    return [
        *_commit_arguments(changes),
        _effect_traces(changes),
        *timers.timer_arguments(changes),
        [change.partition for change in changes],
        *_schema_arguments(changes),
        [change.ends for change in changes] if any(c.ends for c in changes) else None,
    ]


def _schema_arguments(
    changes: Sequence[Change],
) -> tuple[list[int] | None, list[str | None] | None]:
    """The events' schema versions and the snapshots' fingerprints, each None when there
    is nothing to write (every event at version 1; no snapshot)."""
    versions = [event.schema_version for change in changes for event in change.events]
    fingerprints = [change.snapshot.fingerprint if change.snapshot else None for change in changes]
    return (
        versions if any(version != 1 for version in versions) else None,
        fingerprints if any(change.snapshot for change in changes) else None,
    )


def _effect_traces(changes: Sequence[Change]) -> list[str | None] | None:
    """The trace context of each effect, in ``_commit_arguments``' order, as JSON text;
    None when no effect has one (the usual case: nothing to write then)."""
    if not any(change.trace and change.effects for change in changes):
        return None
    return [encode_trace(change.trace) for change in changes for _ in range(len(change.effects))]


# The store's sessions. Every statement the store runs reads or writes the rows of
# a batch, an entity or a range by an index, and runs on a plan cached for the
# session (asyncpg's prepared statements; the commit function forces generic
# plans): a plan made while a table was small - a fresh namespace, or any table
# on a server whose autovacuum is off or behind, so that no ANALYZE replaces it -
# is a sequential scan, and it stays one as the table grows (seen: the commit's
# lock read scanning 100,000 entities per batch, three times the database's CPU
# per timer fire). No sequential scan where an index serves, whatever the
# planner believes of a table's size; a table with no such index is still scanned.
# No JIT: the store's statements are short, and a scan left with no index costs
# the planner's penalty for it, far above the threshold at which PostgreSQL
# would compile each execution (tens of milliseconds, every time).
_SESSION = {"application_name": "pachyderm", "enable_seqscan": "off", "jit": "off"}


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset that leaves the session as it is: the store keeps no session state.

    asyncpg's default reset runs ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`` on every release: a second round trip for every
    commit, on the latency of every reply. Here it has nothing to undo: the
    store takes only transaction-scoped advisory locks (``pg_advisory_xact_lock``),
    changes settings only with ``SET LOCAL`` or for the length of a function
    call (``pachyderm_commit``'s ``plan_cache_mode``), and opens no cursors,
    temporary tables or ``LISTEN``; fleet membership has a pool of its own. A
    transaction left open (by a cancelled call) is still rolled back: asyncpg
    does that itself before calling this (``Connection._reset``, asyncpg >= 0.30).
    Whatever takes session state on this pool must undo it itself.
    """


def _outbox_entry(row: Any) -> OutboxEntry:
    return OutboxEntry(
        row["effect_id"],
        row["destination"],
        row["payload"],
        row["entity_id"],
        row["command_id"],
        row["created_at"],
        row["attempts"],
        decode_trace(row["trace_context"]),
    )


def _fenced_positions(error: StoreError) -> list[int]:
    """The positions (1-based) of the changes the fence refused, if that is what failed."""
    cause = error.__cause__
    if not isinstance(cause, asyncpg.PostgresError) or cause.sqlstate != _FENCED:
        return []
    return [int(n) for n in (cause.detail or "").split(",") if n]


def _with_later(ordered: Sequence[Change], refused: set[int]) -> set[int]:
    """``refused`` and every later change of the same entities (computed on top of them)."""
    entities = {ordered[i].ref.id for i in refused}
    first = min(refused)
    return refused | {i for i in range(first, len(ordered)) if ordered[i].ref.id in entities}


def _outcome(row: Any) -> CommitOutcome:
    kind = row["outcome"]
    if kind == "c":
        return Committed(row["version"])
    if kind == "d":
        return Duplicate(row["reply"], row["version"])
    if kind == "g":
        return TimerGone(row["version"])
    if kind == "n":
        return Ended(row["version"], ENDED)
    if kind == "e":
        return Ended(ERASED_VERSION, ERASED)
    return Conflict(row["version"])


class PostgresEventStore:
    """:class:`~pachyderm.store.EventStore` on PostgreSQL, one schema per namespace."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self._pool = pool
        self.schema = schema
        self._notifier = LogNotifier(pool, schema)
        self._listeners: list[LogListener] = []

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        schema: str = "pachyderm",
        min_size: int = 1,
        max_size: int = 10,
        statement_timeout: float | None = None,
    ) -> PostgresEventStore:
        """Open a connection pool whose sessions see ``schema`` first.

        ``statement_timeout``: seconds PostgreSQL has to answer a statement, or to
        accept a connection, before the call fails with
        :class:`~pachyderm.StoreUnavailableError`, so that a network cut which drops
        packets (rather than refusing them) holds no call, and no batch of deliveries,
        for longer; None: asyncpg's defaults (statements wait for ever, a connection 60 s).
        """
        check_schema_name(schema)
        limits = {} if statement_timeout is None else {"timeout": statement_timeout}
        async with translated_errors():
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings={"search_path": schema, **_SESSION},
                reset=_keep_session,
                command_timeout=statement_timeout,
                **limits,
            )
        return cls(pool, schema)

    async def migrate(self) -> int:
        migrations = migrations_for("postgres")
        async with translated_errors(), self._pool.acquire() as conn, conn.transaction():
            # Serialise concurrent migrators (several pods starting at once):
            # even CREATE SCHEMA IF NOT EXISTS can fail when two race.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('pachyderm.migrate'), hashtext($1))",
                self.schema,
            )
            # Create the schema only when missing: CREATE SCHEMA IF NOT EXISTS
            # needs the CREATE right on the database even when the schema is
            # there, which a least-privilege migrator role does not have.
            exists = await conn.fetchval(
                "SELECT true FROM pg_namespace WHERE nspname = $1", self.schema
            )
            if not exists:
                await conn.execute(f'CREATE SCHEMA "{self.schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{self.schema}".schema_migrations ('
                "version int PRIMARY KEY, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = await conn.fetchval(
                f'SELECT coalesce(max(version), 0) FROM "{self.schema}".schema_migrations'
            )
            for migration in pending(migrations, applied):
                await self._apply(conn, migration.sql)
                await conn.execute(
                    f'INSERT INTO "{self.schema}".schema_migrations (version, name) '
                    "VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
        return len(migrations)

    async def _apply(self, conn: asyncpg.Connection, sql: str) -> None:
        await conn.execute(f'SET LOCAL search_path TO "{self.schema}"')
        try:
            await conn.execute(sql)
        except asyncpg.PostgresError as error:
            raise MigrationError(f"migration failed in schema {self.schema}: {error}") from error

    async def load(self, ref: Ref, *, use_snapshot: bool = True) -> LoadedEntity:
        async with translated_errors(), self._pool.acquire() as conn:
            head = await conn.fetchrow(
                "SELECT e.entity_type, e.ended, e.version AS stored, s.version, s.state,"
                " s.fingerprint FROM entities e"
                " LEFT JOIN snapshots s ON s.entity_id = e.entity_id AND $2"
                " WHERE e.entity_id = $1",
                ref.id,
                use_snapshot,
            )
            if head is None:
                return LoadedEntity(ref, None)
            if head["entity_type"] != ref.type:
                raise EntityTypeMismatchError(ref.id, head["entity_type"], ref.type)
            if head["ended"] == ERASED:
                return LoadedEntity(ref, None, (), ERASED, ERASED_VERSION)
            snapshot = (
                None
                if head["state"] is None
                else Snapshot(head["version"], head["state"], head["fingerprint"])
            )
            rows = await conn.fetch(
                _EVENTS_FROM, ref.id, (snapshot.version if snapshot else 0) + 1, None
            )
        ended = head["ended"]
        stored = head["stored"] if ended else None
        return LoadedEntity(ref, snapshot, tuple(map(_recorded, rows)), ended, stored)

    async def commit(self, changes: Sequence[Change]) -> list[CommitOutcome]:
        if not changes:
            return []
        # pachyderm_commit takes the changes sorted by entity id (stable, so
        # per-entity order holds; Python and PostgreSQL both order UUIDs by
        # their bytes): it locks in that one global order, so overlapping
        # batches never deadlock, and decides each entity's changes as a run.
        order = sorted(range(len(changes)), key=lambda index: changes[index].ref.id)
        ordered = [changes[i] for i in order]
        outcomes = await self._commit_sorted(ordered)
        self._notifier.committed(change.partition for change in changes if change.events)
        by_index = dict(zip(order, outcomes, strict=True))
        return [by_index[index] for index in range(len(changes))]

    async def _commit_sorted(self, ordered: list[Change]) -> list[CommitOutcome]:
        """Commit ``ordered`` (sorted by entity id); a batch the fence refuses (it held
        changes to parked entities) is committed again without those, and without the
        later changes of their entities, which are :class:`Fenced` too."""
        if one_change.eligible(ordered) and (version := await self._commit_one(ordered[0])):
            return [Committed(version)]
        fenced: set[int] = set()
        while True:
            kept = [i for i in range(len(ordered)) if i not in fenced]
            if not kept:
                return [Fenced() for _ in ordered]
            try:
                async with translated_errors(), self._pool.acquire() as conn:
                    rows = await conn.fetch(_COMMIT, *commit_arguments([ordered[i] for i in kept]))
            except StoreError as error:
                refused = _fenced_positions(error)
                if not refused:
                    raise
                fenced |= _with_later(ordered, {kept[n - 1] for n in refused})
                continue
            outcomes: dict[int, CommitOutcome] = dict.fromkeys(fenced, Fenced())
            outcomes.update(zip(kept, map(_outcome, rows), strict=True))
            return [outcomes[i] for i in range(len(ordered))]

    async def _commit_one(self, change: Change) -> int | None:
        """The version ``change`` committed at through the one-change statement, or
        None: it committed nothing, and the fenced function decides the change."""
        try:
            async with translated_errors(), self._pool.acquire() as conn:
                version = await conn.fetchval(one_change.ONE_CHANGE, *one_change.arguments(change))
        except StoreError as error:
            if not isinstance(error.__cause__, asyncpg.UniqueViolationError):
                raise
            return None  # its command id was recorded meanwhile: a duplicate, answered so
        return None if version is None else int(version)

    async def recorded(
        self, commands: Sequence[tuple[uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, str], Duplicate]:
        if not commands:
            return {}
        entity_ids, command_ids = zip(*commands, strict=True)
        async with translated_errors(), self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT c.entity_id, c.command_id, c.version, c.reply"
                " FROM commands c JOIN unnest($1::uuid[], $2::text[]) AS k(entity_id, command_id)"
                " USING (entity_id, command_id)",
                list(entity_ids),
                list(command_ids),
            )
        return {
            (row["entity_id"], row["command_id"]): Duplicate(row["reply"], row["version"])
            for row in rows
        }

    async def versions(self, entity_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        async with translated_errors(), self._pool.acquire() as conn:
            rows = await conn.fetch(
                # An erased entity's row is at -2 (migration 0013); readers see -1.
                "SELECT entity_id, greatest(version, -1) AS version FROM entities"
                " WHERE entity_id = ANY($1)",
                list(entity_ids),
            )
        return {row["entity_id"]: row["version"] for row in rows}

    async def history(
        self, entity_id: uuid.UUID, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        async with translated_errors(), self._pool.acquire() as conn:
            rows = await conn.fetch(_EVENTS_FROM, entity_id, from_version, limit)
        return [_recorded(row) for row in rows]

    async def pending_effects(self, limit: int = 100, older_than: float = 0.0) -> list[OutboxEntry]:
        async with translated_errors(), self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT effect_id, destination, payload, entity_id, command_id, created_at,"
                " attempts, trace_context FROM outbox WHERE published_at IS NULL"
                " AND created_at <= now() - make_interval(secs => $2)"
                " AND (retry_at IS NULL OR retry_at <= now())"
                " ORDER BY position LIMIT $1",
                limit,
                older_than,
            )
        return [_outbox_entry(row) for row in rows]

    async def mark_published(self, effect_ids: Sequence[uuid.UUID]) -> None:
        async with translated_errors(), self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE outbox SET published_at = now()"
                " WHERE effect_id = ANY($1) AND published_at IS NULL",
                list(effect_ids),
            )

    async def postpone_effects(self, delays: Mapping[uuid.UUID, float]) -> None:
        if not delays:
            return
        async with translated_errors(), self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE outbox SET attempts = attempts + 1,"
                " retry_at = now() + make_interval(secs => d.delay)"
                " FROM unnest($1::uuid[], $2::float8[]) AS d(effect_id, delay)"
                " WHERE outbox.effect_id = d.effect_id AND published_at IS NULL",
                list(delays),
                list(delays.values()),
            )

    async def list_entities(
        self,
        entity_type: str,
        *,
        after: uuid.UUID | tuple[datetime, uuid.UUID] | None = None,
        limit: int = 100,
        by_change: bool = False,
    ) -> list[ListedEntity]:
        query, arguments = listing.listing_query(entity_type, after, limit, by_change)
        async with translated_errors(), self._pool.acquire() as conn:
            return listing.listed(await conn.fetch(query, *arguments))

    async def read_log(self, partition: int, after: int, limit: int) -> list[LoggedEvent]:
        async with translated_errors(), self._pool.acquire() as conn:
            rows = await conn.fetch(_LOG, partition, after, limit)
        return [
            LoggedEvent(row["partition"], row["position"], row["entity_type"], _recorded(row))
            for row in rows
        ]

    async def log_heads(self) -> dict[int, int]:
        async with translated_errors(), self._pool.acquire() as conn:
            rows = await conn.fetch("SELECT partition, position FROM log_heads")
        return {row["partition"]: row["position"] for row in rows}

    async def due_timers(
        self, partition: int, until: datetime, limit: int, *, skip: Collection[uuid.UUID] = ()
    ) -> list[StoredTimer]:
        async with translated_errors(), self._pool.acquire() as conn:
            rows = await conn.fetch(timers.DUE, partition, until, limit, list(skip))
        return [timers.stored_timer(row) for row in rows]

    async def entity_timers(self, entity_id: uuid.UUID) -> list[StoredTimer]:
        async with translated_errors(), self._pool.acquire() as conn:
            rows = await conn.fetch(timers.OF_ENTITY, entity_id)
        return [timers.stored_timer(row) for row in rows]

    async def postpone_timers(
        self, delays: Mapping[tuple[uuid.UUID, str], float]
    ) -> dict[tuple[uuid.UUID, str], int]:
        if not delays:
            return {}
        async with translated_errors(), self._pool.acquire() as conn:
            rows = await conn.fetch(
                timers.POSTPONE,
                [entity_id for entity_id, _ in delays],
                [key for _, key in delays],
                list(delays.values()),
            )
        return {(row["entity_id"], row["timer_key"]): row["attempts"] for row in rows}

    async def hold_timers(self, keys: Sequence[tuple[uuid.UUID, str]]) -> None:
        if not keys:
            return
        async with translated_errors(), self._pool.acquire() as conn:
            await conn.execute(
                timers.HOLD, [entity_id for entity_id, _ in keys], [k for _, k in keys], HELD_FOR
            )

    async def release_timer(self, entity_id: uuid.UUID, key: str) -> bool:
        async with translated_errors(), self._pool.acquire() as conn:
            return await conn.fetchval(timers.RELEASE, entity_id, key) is not None

    async def count_timers(self) -> int:
        async with translated_errors(), self._pool.acquire() as conn:
            return int(await conn.fetchval(timers.COUNT))

    async def drop_namespace(self) -> None:
        """Delete the whole schema with everything in it (tests, tear-down)."""
        async with translated_errors(), self._pool.acquire() as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def log_wakeups(self) -> LogWakeups:
        """Wake-ups of this namespace's log from every process that commits to it
        (LISTEN on a connection of the pool, held until closed)."""
        listener = LogListener(self._pool, self.schema)
        listener.start()
        self._listeners.append(listener)
        return listener

    async def close(self) -> None:
        await self._notifier.close()
        for listener in self._listeners:
            await listener.close()
        await self._pool.close()

    async def prune(self, retained: Retained, older_than: float, limit: int) -> int:
        statement = retention.prune_statement(check_retained(retained))
        async with translated_errors(), self._pool.acquire() as conn:
            return int(await conn.fetchval(statement, older_than, check_limit(limit)))

    async def count_prunable(self, retained: Retained, older_than: float) -> int:
        statement = retention.count_statement(check_retained(retained))
        async with translated_errors(), self._pool.acquire() as conn:
            return int(await conn.fetchval(statement, older_than))

    async def erase(self, ref: Ref) -> Erasure:
        async with translated_errors(), self._pool.acquire() as conn, conn.transaction():
            return await erasure.erase(conn, ref)

    async def prune_ended(self, limit: int) -> int:
        async with translated_errors(), self._pool.acquire() as conn:
            return int(await conn.fetchval(erasure.PRUNE_ENDED, check_limit(limit)))

    async def count_prunable_ended(self) -> int:
        async with translated_errors(), self._pool.acquire() as conn:
            return int(await conn.fetchval(erasure.COUNT_ENDED))

    def quarantine_store(self) -> QuarantineStore:
        """The namespace's poison commands (migration 0014), on this store's pool."""
        return PostgresQuarantine(self._pool, translated_errors)
