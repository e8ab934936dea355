"""A process's telemetry from its settings: Prometheus always, OTLP when configured.

OpenTelemetry's standard variables are honoured as every OpenTelemetry SDK
does: ``OTEL_EXPORTER_OTLP_ENDPOINT`` is the collector when
``PACHYDERM_OTLP_ENDPOINT`` is unset (Pachyderm's own setting wins), and
``OTEL_SERVICE_NAME`` replaces the service name the process gives itself.
``OTEL_RESOURCE_ATTRIBUTES`` adds to the resource, and the exporters read
``OTEL_EXPORTER_OTLP_HEADERS`` and the timeouts themselves.
"""

from __future__ import annotations

import os

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from .._settings import Settings
from ._prometheus import PrometheusReader
from ._telemetry import Telemetry, install_telemetry

SERVICE_NAME = "OTEL_SERVICE_NAME"
OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"

# Bounds how long a stopping process waits for an unreachable collector.
_EXPORT_TIMEOUT = 5.0


def setup_telemetry(
    settings: Settings, service_name: str, *, instance: str | None = None
) -> Telemetry:
    """Configure and install this process's telemetry; shut it down when the process ends.

    Metrics are always kept, for ``/metrics``. With a collector
    (:func:`collector_endpoint`: a base URL, e.g. ``http://collector:4318``), spans and
    metrics are also exported over OTLP/HTTP; without it, no span is
    recorded, since nobody would read it. The providers also become
    OpenTelemetry's global ones (unless some were set before), so that spans
    of application code, such as effect handlers, join Pachyderm's traces.
    """
    attributes = {
        "service.name": os.environ.get(SERVICE_NAME) or service_name,
        "service.namespace": settings.namespace,
    }
    if instance:
        attributes["service.instance.id"] = instance
    resource = Resource.create(attributes)
    prometheus = PrometheusReader()
    readers: list[MetricReader] = [prometheus]
    tracer_provider = None
    endpoint = collector_endpoint(settings)
    if endpoint:
        collector = endpoint.rstrip("/")
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(f"{collector}/v1/traces", timeout=_EXPORT_TIMEOUT))
        )
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(f"{collector}/v1/metrics", timeout=_EXPORT_TIMEOUT)
            )
        )
        trace.set_tracer_provider(tracer_provider)
    meter_provider = MeterProvider(readers, resource, shutdown_on_exit=False)
    metrics.set_meter_provider(meter_provider)
    telemetry = Telemetry(tracer_provider, meter_provider, prometheus)
    install_telemetry(telemetry)
    return telemetry


def collector_endpoint(settings: Settings) -> str | None:
    """The OTLP/HTTP collector: ``settings.otlp_endpoint``, else ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    return settings.otlp_endpoint or os.environ.get(OTLP_ENDPOINT) or None
