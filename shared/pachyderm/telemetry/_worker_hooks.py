"""Telemetry as the worker's hooks: spans, metrics and gauges along a command's path.

The worker calls :class:`~pachyderm.worker.WorkerHooks`; this is the
implementation that traces and measures, installed by default on every
:class:`~pachyderm.worker.Worker`. It reads the installed telemetry at each
call, so installing other providers later takes effect at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from opentelemetry.context import Context

from .._hooks import BatchHooks, Reading, WorkerHooks
from ..store import OutboxEntry
from ..transport import Delivery, Message
from ._batch import Batch, processing
from ._gauges import observing, observing_in_flight, observing_timers
from ._messaging import publishing
from ._propagation import extract
from ._store import committing, loading
from ._telemetry import instruments
from ._tracing import traced


def _stored_trace(entry: OutboxEntry) -> Context | None:
    """The trace of the command that made ``entry``, as the outbox kept it."""
    return extract(entry.trace) if entry.trace else None


class TelemetryHooks(WorkerHooks):
    """Traces and measures what the worker does (see README, Observability)."""

    def batch(
        self, exchange: str, partition: int, deliveries: Sequence[Delivery]
    ) -> AbstractContextManager[BatchHooks]:
        return processing(exchange, partition, deliveries)

    def loading(self, store: object, entities: int) -> AbstractContextManager[object]:
        return loading(store, entities)

    def deciding(self) -> AbstractContextManager[object]:
        return traced("handle")

    def committing(self, store: object, changes: int) -> AbstractContextManager[object]:
        return committing(store, changes)

    def conflict(self, entity_type: str) -> None:
        telemetry = instruments()
        if telemetry.metering:
            telemetry.conflicts.add(1, telemetry.type_labels(entity_type))

    def publishing(
        self, exchange: str, message: Message, entry: OutboxEntry, batch: BatchHooks | None
    ) -> AbstractContextManager[Message]:
        # An effect continues its command's trace: from the batch that committed it,
        # or, published by the sweep after a crash, from what the outbox kept.
        parent = batch.parent_of(entry) if isinstance(batch, Batch) else _stored_trace(entry)
        return publishing(exchange, message, parent=parent)

    def published(self, entries: Sequence[OutboxEntry], source: str) -> None:
        telemetry = instruments()
        if telemetry.metering:
            now = datetime.now(UTC)
            labels = {"source": source}
            for entry in entries:
                telemetry.outbox_lag.record((now - entry.created_at).total_seconds(), labels)

    def failed(self, entry: OutboxEntry, error: Exception) -> None:
        telemetry = instruments()
        if telemetry.metering:
            telemetry.outbox_failures.add(1, {"error": type(error).__name__})

    def serving(self, partitions: Reading, entities: Reading) -> AbstractContextManager[object]:
        return observing(partitions=partitions, entities=entities)

    def timer_fired(self, entity_type: str, lateness: float) -> None:
        telemetry = instruments()
        if telemetry.metering:
            labels = telemetry.type_labels(entity_type)
            telemetry.timers_fired.add(1, labels)
            telemetry.timer_lateness.record(lateness, labels)

    def timer_failed(self, entity_type: str, error: Exception) -> None:
        telemetry = instruments()
        if telemetry.metering:
            labels = {"entity_type": entity_type, "error": type(error).__name__}
            telemetry.timer_failures.add(1, labels)

    def newer_schema(self, entity_type: str, error: Exception) -> None:
        telemetry = instruments()
        if telemetry.metering:
            telemetry.newer_schema.add(1, telemetry.type_labels(entity_type))

    def timers_pending(self, pending: Reading) -> AbstractContextManager[object]:
        return observing_timers(pending)

    def in_flight(self, commands: Reading) -> AbstractContextManager[object]:
        return observing_in_flight(commands)

    def pruned(self, retained: str, rows: int) -> None:
        telemetry = instruments()
        if telemetry.metering:
            telemetry.pruned.add(rows, {"retained": retained})

    def quarantined(self, entity_type: str, policy: str) -> None:
        telemetry = instruments()
        if telemetry.metering:
            telemetry.quarantined.add(1, {**telemetry.type_labels(entity_type), "policy": policy})
