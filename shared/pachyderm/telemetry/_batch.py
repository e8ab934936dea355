"""The telemetry of one batch of commands: one process span, and the commands' metrics.

One span per batch, not per message: it links every delivery's creation
context (the conventions' shape for batches). A batch of one is also the
child of its message's span, so a lone call reads as one trace; a larger
batch starts a trace of its own, and each command's effects still continue
that command's trace.

A batch's metrics (its size, its commit's duration, its commands' durations and
outcomes) are recorded once its replies are out, never before: an OpenTelemetry
histogram record costs some 20 us, and on the path to a reply it would add to
every call's latency (bench/results.md, "Where a sequential call's time goes").
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry.context import Context
from opentelemetry.metrics import Histogram
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, get_current_span

from .._hooks import BatchHooks
from .._wire import COMMAND, KIND_HEADER, QUERY
from ..store import OutboxEntry
from ..transport import Delivery
from . import _conventions as semconv
from ._messaging import links_to, message_attributes, operation_attributes, started
from ._propagation import extract, sent_at
from ._telemetry import instruments
from ._tracing import NO_SPAN

FAILED = "failed"

_CURRENT: ContextVar[Batch | None] = ContextVar("pachyderm_batch", default=None)


def record_after_batch(histogram: Histogram, value: float) -> None:
    """Record ``value`` once the current batch is done (at once outside a batch, or in a
    task that a batch started and outlived)."""
    batch = _CURRENT.get()
    if batch is None or batch.done:
        histogram.record(value)
    else:
        batch.deferred.append((histogram, value))


class Batch(BatchHooks):
    """One batch's process span, and the outcomes of its commands.

    ``contexts`` are the deliveries' trace contexts, for their commands'
    effects to continue; None: the effects continue the current span.
    """

    def __init__(
        self,
        deliveries: Sequence[Delivery],
        span: Span,
        contexts: list[Context] | None,
        received_at: float,
    ) -> None:
        self._deliveries = deliveries
        self._span = span
        self._contexts = contexts
        self._received_at = received_at
        self._instruments = instruments()
        self._outcome_on_span = len(deliveries) == 1 and span.is_recording()
        self.measuring = self._instruments.metering or self._outcome_on_span
        """Whether :meth:`outcome` is worth calling."""
        self._tally: dict[tuple[str | None, str, str], int] = {}
        self._origins: dict[tuple[uuid.UUID, str], Context] | None = None
        self.deferred: list[tuple[Histogram, float]] = []
        """Measurements taken during the batch, recorded when it ends."""
        self.done = False

    def outcome(self, index: int, entity_type: str | None, outcome: str) -> None:
        """Delivery ``index`` was answered with ``outcome`` (ok, rejected, failed, invalid,
        duplicate); ``entity_type`` only when the message named a known one."""
        message = self._deliveries[index].message
        if self._outcome_on_span:
            self._span.set_attribute(semconv.OUTCOME, outcome)
            if outcome == FAILED:
                self._span.set_status(Status(StatusCode.ERROR, FAILED))
        telemetry = self._instruments
        if telemetry.metering:
            kind = QUERY if message.headers.get(KIND_HEADER) == QUERY else COMMAND
            key = (entity_type, kind, outcome)
            self._tally[key] = self._tally.get(key, 0) + 1
            started_at = sent_at(message.headers, self._received_at)
            telemetry.command_duration.record(
                max(time.time() - started_at, 0.0), telemetry.command_labels(*key)
            )

    def parent_of(self, entry: OutboxEntry) -> Context | None:
        """The trace an effect of this batch continues: its command's (None: the current)."""
        if self._contexts is None:
            return None
        if self._origins is None:
            self._origins = self._traced_commands(self._contexts)
        return self._origins.get((entry.entity_id, entry.command_id))

    def _traced_commands(self, contexts: list[Context]) -> dict[tuple[uuid.UUID, str], Context]:
        origins: dict[tuple[uuid.UUID, str], Context] = {}
        for delivery, context in zip(self._deliveries, contexts, strict=True):
            message = delivery.message
            if not (message.message_id and get_current_span(context).get_span_context().is_valid):
                continue
            try:
                entity_id = uuid.UUID(message.routing_key)
            except ValueError:
                continue  # not a command of any entity: it has no effects
            origins[(entity_id, message.message_id)] = context
        return origins

    def record(self) -> None:
        """Add the batch's outcomes to the command counter, one update per kind of outcome."""
        telemetry = self._instruments
        for key, count in self._tally.items():
            telemetry.commands.add(count, telemetry.command_labels(*key))

    def record_deferred(self) -> None:
        """Record the batch's size and what was measured during it."""
        self.done = True
        if self._instruments.metering:
            self._instruments.batch_size.record(len(self._deliveries))
        deferred, self.deferred = self.deferred, []
        for histogram, value in deferred:
            histogram.record(value)


@contextmanager
def processing(exchange: str, partition: int, deliveries: Sequence[Delivery]) -> Iterator[Batch]:
    """The CONSUMER span of a batch from ``exchange``'s queue ``partition``, current in
    the block; the outcomes reported to the batch are recorded if the block succeeds."""
    telemetry = instruments()
    received_at = time.time()
    contexts = [extract(d.message.headers) for d in deliveries] if telemetry.tracing else []
    single = len(deliveries) == 1
    spanning = (
        started(
            f"{semconv.PROCESS} {exchange}",
            SpanKind.CONSUMER,
            # A batch of many starts a trace of its own (only linked to its messages').
            context=contexts[0] if single else Context(),
            links=links_to(contexts),
        )
        if telemetry.tracing
        else NO_SPAN
    )
    with spanning as current:
        if current.is_recording():
            current.set_attributes(
                message_attributes(exchange, deliveries[0].message, semconv.PROCESS)
                if single
                else operation_attributes(exchange, semconv.PROCESS)
            )
            current.set_attribute(semconv.BATCH_SIZE, len(deliveries))
            current.set_attribute(semconv.PARTITION, str(partition))
        # A batch of one is in its command's trace: its effects continue the current span.
        origins = contexts if telemetry.tracing and not single else None
        batch = Batch(deliveries, current, origins, received_at)
        token = _CURRENT.set(batch)
        try:
            yield batch
            batch.record()
        finally:
            _CURRENT.reset(token)
            batch.record_deferred()
