"""Telemetry recorded in memory, installed for one test and removed after it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pachyderm import EffectHandler
from pachyderm.telemetry import PrometheusReader, Telemetry, install_telemetry


def points(reader: InMemoryMetricReader, name: str, **labels: str) -> list[Any]:
    """The data points of metric ``name`` whose attributes include ``labels``."""
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found += [
                        point
                        for point in metric.data.data_points
                        if labels.items() <= dict(point.attributes or {}).items()
                    ]
    return found


@dataclass
class Recorded:
    """What Pachyderm reported during a test."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    prometheus: PrometheusReader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]

    def points(self, name: str, **labels: str) -> list[Any]:
        return points(self.reader, name, **labels)

    def total(self, name: str, **labels: str) -> float:
        """The sum of a counter's (or gauge's) points matching ``labels``."""
        return float(sum(point.value for point in self.points(name, **labels)))

    def count(self, name: str, **labels: str) -> int:
        """How many measurements a histogram took, over the points matching ``labels``."""
        return int(sum(point.count for point in self.points(name, **labels)))


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader, prometheus = InMemoryMetricReader(), PrometheusReader()
    meter_provider = MeterProvider([reader, prometheus])
    install_telemetry(Telemetry(tracer_provider, meter_provider, prometheus))
    try:
        yield Recorded(exporter, reader, prometheus)
    finally:
        install_telemetry(Telemetry())
        tracer_provider.shutdown()
        meter_provider.shutdown()


class Mailer(EffectHandler):
    """The counter's effect handler, keeping what it was given."""

    name = "admin_mailer"

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def dispatch(self, payload: Any, config: Mapping[str, Any]) -> None:
        self.sent.append(payload)


@pytest.fixture
def mailer() -> Mailer:
    return Mailer()
