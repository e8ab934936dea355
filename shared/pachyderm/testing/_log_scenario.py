"""given a log / project / then rows: a projection's logic tested without a fleet.

::

    projected = await given_log(bank_balances.app, {
        alice: [Opened(owner="alice"), Deposited(amount=100)],
        bob: [Opened(owner="bob")],
    }).project(Balances(), connection)
    assert await balances(connection) == {"alice": 100, "bob": 0}

The events are committed to a throwaway SQLite store, as the fleet commits them
(one change per entity and commit, versions counted per entity, a gap-free
position per partition in commit order, the store's ``recorded_at``), and the
projection is then run by the fleet's own :class:`ProjectionRunner`, partition
after partition, batch after batch, until it is caught up. So the projection
gets what it would get in production: only the event classes it declares,
decoded from their stored bytes, in batches through ``apply_many``, each with
the :class:`~pachyderm.ProjectionContext` the runner fills.

A :class:`~pachyderm.PostgresProjection` writes through the caller's asyncpg
connection (or one opened from a DSN): each batch in a transaction of its own
(a savepoint if the caller's connection is already in one), committed before
the next batch reads, so the read model's rows can be asserted afterwards. A
plain :class:`~pachyderm.Projection` runs without any database of the caller's.
"""

from __future__ import annotations

import importlib
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .._app import App
from .._entity_type import EntityType
from .._errors import PachydermError
from .._projection import Projection
from .._reference import Ref
from ..projections import Clear, Cursor, CursorStore, ProjectionRunner, RunnerOptions, SqliteCursors
from ..store import Change, Committed, LoggedEvent, NewEvent, SqliteEventStore

AnEntity = TypeVar("AnEntity", Ref, uuid.UUID, Ref | uuid.UUID)
"""An entity in a scenario's log: its reference, or only its id when one entity type of
the app declares its events."""

Histories = Mapping[AnEntity, Sequence[Any]] | Iterable[tuple[AnEntity, Sequence[Any]]]
"""Events per entity: a mapping (one commit per entity, in the mapping's order) or
``(entity, events)`` pairs (one commit each, in order: an entity may come back)."""


def given_log(app: App, histories: Histories[AnEntity], *, partitions: int = 1) -> LogScenario:
    """Start a projection scenario: a log holding ``histories`` (events of ``app``'s
    entity types), committed in order.

    Entities are spread over ``partitions`` partitions in turn, in the order they
    first appear (with 1, the log is the commits' order).
    """
    return LogScenario(app, histories, partitions)


@dataclass(frozen=True, slots=True)
class _Commit:
    ref: Ref
    events: list[NewEvent]


class LogScenario:
    """A log of committed events, ready to be projected (:meth:`project`)."""

    def __init__(self, app: App, histories: Histories[AnEntity], partitions: int = 1) -> None:
        if partitions < 1:
            raise PachydermError(f"partitions must be at least 1, got {partitions}")
        self.app = app
        self.partitions = partitions
        pairs = histories.items() if isinstance(histories, Mapping) else histories
        self._commits = [_commit(app, entity, events) for entity, events in pairs]

    async def project(
        self,
        projection: Projection,
        connection: Any = None,
        *,
        dsn: str | None = None,
        schema: str | None = None,
        batch_size: int = RunnerOptions().batch_size,
    ) -> Projected:
        """Run ``projection`` over the log until it is caught up.

        Each call starts over: a new log, the projection's cursors at 0 (emptying the
        read model's tables in between is the test's business).

        A :class:`~pachyderm.PostgresProjection` needs ``connection`` (an asyncpg
        connection, left open) or ``dsn`` (a connection of its own, whose
        ``search_path`` is ``schema`` when given, closed after); a plain
        :class:`~pachyderm.Projection` takes neither. ``batch_size``: the most
        log positions one batch reads, as :class:`RunnerOptions` has it.
        """
        app = _registering(self.app, projection)
        if projection.exactly_once and connection is None and dsn is None:
            raise PachydermError(
                f"projection {projection.name!r} is a PostgresProjection: give project()"
                " an asyncpg connection or a dsn"
            )
        if not projection.exactly_once and (connection is not None or dsn is not None):
            raise PachydermError(
                f"projection {projection.name!r} is kept at least once: its runner passes"
                " no connection (a PostgresProjection gets one)"
            )
        async with AsyncExitStack() as stack:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            store = await SqliteEventStore.open(folder / "log.db")
            stack.push_async_callback(store.close)
            await store.migrate()
            log = await self._commit(store)
            sqlite_cursors = await SqliteCursors.open(str(folder / "log.db"))
            stack.push_async_callback(sqlite_cursors.close)
            cursors: CursorStore = sqlite_cursors
            if projection.exactly_once:
                if connection is None:
                    connection = await _connect(str(dsn), schema)
                    stack.push_async_callback(connection.close)
                cursors = _ReadModelCursors(sqlite_cursors, connection)
            await cursors.ensure(projection.name, self.partitions)
            options = RunnerOptions(batch_size=batch_size)
            for partition in range(self.partitions):
                runner = ProjectionRunner(
                    app, store, cursors, projection, partition, options=options
                )
                while await runner.step():
                    pass
            found = await cursors.cursors(projection.name)
            return Projected(
                projection, log, {cursor.partition: cursor.position for cursor in found}
            )

    async def _commit(self, store: SqliteEventStore) -> list[LoggedEvent]:
        """Commit the scenario's changes (one transaction); the log they make."""
        versions: dict[uuid.UUID, int] = {}
        partitions: dict[uuid.UUID, int] = {}
        changes = []
        for number, commit in enumerate(self._commits):
            entity_id = commit.ref.id
            partition = partitions.setdefault(entity_id, len(partitions) % self.partitions)
            version = versions.get(entity_id, 0)
            versions[entity_id] = version + len(commit.events)
            changes.append(
                Change(
                    commit.ref,
                    version,
                    f"log-scenario/{number}",
                    commit.events,
                    partition=partition,
                )
            )
        for change, outcome in zip(changes, await store.commit(changes), strict=True):
            if not isinstance(outcome, Committed):
                raise PachydermError(f"the log could not hold {change.ref}: {outcome!r}")
        events = max(1, sum(len(change.events) for change in changes))
        return [
            logged
            for partition in range(self.partitions)
            for logged in await store.read_log(partition, 0, events)
        ]


@dataclass(frozen=True, slots=True)
class Projected:
    """What :meth:`LogScenario.project` did: the log it ran over, and where the
    projection's cursors stopped (the last position of each partition)."""

    projection: Projection
    log: list[LoggedEvent]
    """Every committed event, partition after partition, in log order."""
    positions: dict[int, int]
    """Each partition's cursor after the run."""

    def then(self, **expected: Any) -> Projected:
        """Assert attributes of the projection (``total=75``), by name; returns ``self``."""
        for name, value in expected.items():
            actual = getattr(self.projection, name)
            assert actual == value, f"{name}: expected {value!r}, got {actual!r}"
        return self


def _commit(app: App, entity: Ref | uuid.UUID, events: Sequence[Any]) -> _Commit:
    """The commit of ``events`` to ``entity``, encoded now: an event its entity type does
    not declare is refused when the scenario is given, not when it runs."""
    if isinstance(entity, Ref):
        return _encoded(app.entity_type(entity.type), entity, events)
    if not isinstance(entity, uuid.UUID):
        raise PachydermError(f"an entity in a log scenario is a Ref or a UUID, got {entity!r}")
    if not events:
        raise PachydermError(f"entity {entity}: give a Ref (no events tell its type)")
    classes = {type(event) for event in events}
    types = [
        entity_type
        for entity_type in app
        if classes <= {cls for _, cls in entity_type.events.types()}
    ]
    if len(types) != 1:
        names = ", ".join(sorted(t.name for t in types)) or "none"
        raise PachydermError(
            f"entity {entity}: its events are of the entity types {names}; give a Ref"
        )
    [entity_type] = types
    return _encoded(entity_type, Ref(entity_type.name, entity), events)


def _encoded(entity_type: EntityType[Any], ref: Ref, events: Sequence[Any]) -> _Commit:
    return _Commit(ref, [entity_type.encode_event(event) for event in events])


def _registering(app: App, projection: Projection) -> App:
    """``app``, or one with the same entity types that registers ``projection`` (checked
    as the app would check it) when ``app`` does not."""
    if any(registered is projection for registered in app.projections):
        return app
    return App([entity_type.entity for entity_type in app], projections=[projection])


async def _connect(dsn: str, schema: str | None) -> Any:
    # Imported here: a plain projection's test never loads asyncpg.
    asyncpg = importlib.import_module("asyncpg")
    settings = {} if schema is None else {"search_path": schema}
    return await asyncpg.connect(dsn, server_settings=settings)


class _ReadModelCursors:
    """Cursors in the scenario's SQLite file, whose batches run in a transaction on the
    caller's PostgreSQL connection (the read model's): what
    :class:`~pachyderm.projections.PostgresCursors` does in one database, on two."""

    def __init__(self, cursors: SqliteCursors, connection: Any) -> None:
        self._cursors = cursors
        self._connection = connection

    async def apply_batch(
        self,
        projection: str,
        partition: int,
        expected: int,
        position: int,
        work: Callable[[Any], Awaitable[None]],
    ) -> bool:
        [cursor] = [c for c in await self._cursors.cursors(projection) if c.partition == partition]
        if cursor.position != expected or cursor.paused or cursor.rebuilding:
            return False
        async with self._connection.transaction():
            await work(self._connection)
        return await self._cursors.advance(projection, partition, expected, position)

    async def ensure(self, projection: str, partitions: int) -> None:
        await self._cursors.ensure(projection, partitions)

    async def cursors(self, projection: str | None = None) -> list[Cursor]:
        return await self._cursors.cursors(projection)

    async def advance(self, projection: str, partition: int, expected: int, position: int) -> bool:
        return await self._cursors.advance(projection, partition, expected, position)

    async def set_paused(self, projection: str, paused: bool) -> int:
        return await self._cursors.set_paused(projection, paused)

    async def request_rebuild(self, projection: str) -> int:
        return await self._cursors.request_rebuild(projection)

    async def rebuild(self, projection: str, clear: Clear) -> bool:
        async def in_transaction(_: Any) -> None:
            async with self._connection.transaction():
                await clear(self._connection)

        return await self._cursors.rebuild(projection, in_transaction)

    async def close(self) -> None:
        """The caller's connection stays open; the SQLite cursors close with the scenario."""
