"""Spans (and the commit latency) around the event-store calls of a batch."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from opentelemetry.trace import Span, SpanKind

from ..store import SqliteEventStore
from . import _conventions as semconv
from ._batch import record_after_batch
from ._telemetry import instruments
from ._tracing import traced


def _system(store: object) -> str:
    if isinstance(store, SqliteEventStore):
        return "sqlite"
    # Looked up, not imported: a PostgreSQL store exists only once its module is
    # loaded, and importing it here would load asyncpg into embedded processes.
    postgres = sys.modules.get("pachyderm.store._postgres")
    if postgres is not None and isinstance(store, postgres.PostgresEventStore):
        return "postgresql"
    sharded = sys.modules.get("pachyderm.store._sharded")  # several PostgreSQL servers
    if sharded is not None and isinstance(store, sharded.ShardedEventStore):
        return "postgresql"
    return "other_sql"


@contextmanager
def _calling(store: object, operation: str, attribute: str, count: int) -> Iterator[Span]:
    with traced(operation, kind=SpanKind.CLIENT) as current:
        if current.is_recording():
            current.set_attribute(semconv.DB_SYSTEM, _system(store))
            current.set_attribute(attribute, count)
        yield current


def loading(store: object, entities: int) -> AbstractContextManager[Span]:
    """The ``load`` span of a batch loading ``entities`` entities missing from the cache."""
    return _calling(store, "load", semconv.ENTITY_COUNT, entities)


@contextmanager
def committing(store: object, changes: int) -> Iterator[Span]:
    """The ``commit`` span of a batch's ``changes``, whose duration is also measured."""
    started = time.perf_counter()
    with _calling(store, "commit", semconv.CHANGE_COUNT, changes) as current:
        yield current
    # After the batch's replies, when in a batch (see ._batch).
    record_after_batch(instruments().commit_duration, time.perf_counter() - started)
