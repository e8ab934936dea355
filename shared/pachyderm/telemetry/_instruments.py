"""Pachyderm's tracer and metric instruments, made from the installed providers.

Without providers they are OpenTelemetry's no-op implementations, and the
``tracing`` / ``metering`` flags let hot paths skip per-message work entirely.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.metrics import Meter, MeterProvider, NoOpMeter
from opentelemetry.trace import NoOpTracer, Tracer, TracerProvider

from . import _gauges
from ._process import observe_process

SCOPE = "pachyderm"
PROCESS_SCOPE = "pachyderm.process"

# Seconds, from a fast local commit to an effect the outbox sweep published late.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

Labels = Mapping[str, str]


class Instruments:
    """The tracer and the metric instruments of one set of providers."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.tracing = tracer_provider is not None
        self.metering = meter_provider is not None
        self.tracer: Tracer = (
            tracer_provider.get_tracer(SCOPE) if tracer_provider is not None else NoOpTracer()
        )
        meter: Meter = (
            meter_provider.get_meter(SCOPE) if meter_provider is not None else NoOpMeter(SCOPE)
        )
        self.commands = meter.create_counter(
            "pachyderm.commands",
            unit="{command}",
            description="Commands and queries handled, by outcome:"
            " ok, rejected, failed, invalid, expired, ended, erased, duplicate or deferred",
        )
        self.conflicts = meter.create_counter(
            "pachyderm.conflicts",
            unit="{conflict}",
            description="Commits refused because the entity had moved on (decided again)",
        )
        self.newer_schema = meter.create_counter(
            "pachyderm.newer_schema",
            unit="{entity}",
            description="Entity loads that met an event newer than this code"
            " (its commands are left for a newer worker)",
        )
        self.command_duration = meter.create_histogram(
            "pachyderm.command.duration",
            unit="s",
            description="From publish (or delivery, without the sent-at header) to reply",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.commit_duration = meter.create_histogram(
            "pachyderm.commit.duration",
            unit="s",
            description="One batch's commit to the event store",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.batch_size = meter.create_histogram(
            "pachyderm.batch.size",
            unit="{message}",
            description="Deliveries applied in one batch",
            explicit_bucket_boundaries_advisory=_BATCH_SIZES,
        )
        self.outbox_lag = meter.create_histogram(
            "pachyderm.outbox.lag",
            unit="s",
            description="From an effect's commit to its publish, by source: commit or sweep",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.outbox_failures = meter.create_counter(
            "pachyderm.outbox.failures",
            unit="{effect}",
            description="Publishes of outbox effects that failed (tried again later), by error",
        )
        self.effects_routed_again = meter.create_counter(
            "pachyderm.effects.routed_again",
            unit="{effect}",
            description="Effects that waited for a handler's queue and were published again",
        )
        self.effects_retried = meter.create_counter(
            "pachyderm.effects.retried",
            unit="{try}",
            description="Tries of an effect handler after it failed (backoff and jitter),"
            " by handler",
        )
        self.effects_dead_lettered = meter.create_counter(
            "pachyderm.effects.dead_lettered",
            unit="{effect}",
            description="Effects dead-lettered by a dispatcher: their handler failed every try"
            " (or there was none, or no effect id), by handler",
        )
        meter.create_observable_gauge(
            "pachyderm.effects.unrouted",
            callbacks=[_gauges.observe_unrouted],
            unit="{effect}",
            description="Effects waiting because no handler's queue is bound for them"
            " (as of this dispatcher's last look)",
        )
        self.timers_fired = meter.create_counter(
            "pachyderm.timers.fired",
            unit="{timer}",
            description="Timers fired (their command committed, or sent to its entity)",
        )
        self.timer_lateness = meter.create_histogram(
            "pachyderm.timers.lateness",
            unit="s",
            description="From a timer's due time to its fire's commit",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.timer_failures = meter.create_counter(
            "pachyderm.timers.failures",
            unit="{timer}",
            description="Fires that failed and will be tried again, by error",
        )
        self.pruned = meter.create_counter(
            "pachyderm.pruned",
            unit="{row}",
            description="Rows deleted past their retention window, by what:"
            " commands (command ids) or effects (published outbox rows)",
        )
        self.quarantined = meter.create_counter(
            "pachyderm.quarantined",
            unit="{command}",
            description="Commands quarantined after using up their attempts, by entity type"
            " and policy (park: the entity's later commands wait; skip: they run)",
        )
        meter.create_observable_gauge(
            "pachyderm.timers.pending",
            callbacks=[_gauges.observe_timers],
            unit="{timer}",
            description="Timers pending in the store (as of a worker's last count)",
        )
        meter.create_observable_gauge(
            "pachyderm.partitions.owned",
            callbacks=[_gauges.observe_partitions],
            unit="{partition}",
            description="Partitions this process's workers consume",
        )
        meter.create_observable_gauge(
            "pachyderm.commands.in_flight",
            callbacks=[_gauges.observe_in_flight],
            unit="{command}",
            description="Commands this process's workers are handling, within their cap"
            " (PACHYDERM_MAX_IN_FLIGHT)",
        )
        meter.create_observable_gauge(
            "pachyderm.entities.cached",
            callbacks=[_gauges.observe_entities],
            unit="{entity}",
            description="Entities whose state this process's workers hold in memory",
        )
        if meter_provider is not None:
            observe_process(meter_provider.get_meter(PROCESS_SCOPE))
        self._command_labels: dict[tuple[str | None, str, str], Labels] = {}
        self._type_labels: dict[str, Labels] = {}

    def command_labels(self, entity_type: str | None, kind: str, outcome: str) -> Labels:
        """The attributes of a command's measurements (shared, built once per combination).

        ``entity_type`` is None when the message did not name a known type: an
        arbitrary header value would make the label unbounded.
        """
        key = (entity_type, kind, outcome)
        labels = self._command_labels.get(key)
        if labels is None:
            labels = {"outcome": outcome, "kind": kind}
            if entity_type is not None:
                labels["entity_type"] = entity_type
            self._command_labels[key] = labels
        return labels

    def type_labels(self, entity_type: str) -> Labels:
        """The attributes of a measurement about one entity type (built once per type)."""
        labels = self._type_labels.get(entity_type)
        if labels is None:
            labels = self._type_labels[entity_type] = {"entity_type": entity_type}
        return labels
