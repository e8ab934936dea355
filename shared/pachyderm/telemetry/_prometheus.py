"""The Prometheus text format of OpenTelemetry metrics, collected when scraped.

A pull reader collects the meter provider's metrics on each scrape and
prometheus_client writes them out, named by OpenTelemetry's rules for
Prometheus: dots become underscores, the unit becomes a suffix
(``pachyderm_command_duration_seconds``) and counters end in ``_total``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from prometheus_client import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_UNIT_SUFFIXES = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}
_NOT_IN_NAMES = re.compile(r"[^a-zA-Z0-9_:]+")
_NOT_IN_LABELS = re.compile(r"[^a-zA-Z0-9_]+")
_ANNOTATIONS = re.compile(r"\{[^}]*\}")
_COUNTER, _GAUGE, _HISTOGRAM = "counter", "gauge", "histogram"


class PrometheusReader(MetricReader):
    """A metric reader for Prometheus: :meth:`render` collects and returns the text format.

    Add it to the ``MeterProvider``'s readers; collecting on each scrape
    also runs the observable gauges' callbacks, on the scraping thread.
    """

    def __init__(self) -> None:
        super().__init__()  # cumulative temporality, as Prometheus expects
        self._collecting = threading.Lock()
        self._collected: MetricsData | None = None

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._collected = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release: the reader keeps no more than one collection, briefly."""

    def render(self) -> bytes:
        """The current metrics in Prometheus's text format (version 0.0.4, :data:`CONTENT_TYPE`)."""
        with self._collecting:
            self.collect()
            collected, self._collected = self._collected, None
        return generate_latest(_Families(collected))


def metric_name(name: str, unit: str) -> str:
    """The Prometheus name of an OpenTelemetry metric (without a counter's ``_total``)."""
    base = _NOT_IN_NAMES.sub("_", name).strip("_")
    suffix = _unit_suffix(unit)
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base}_{suffix}"
    return base if not base[:1].isdigit() else f"_{base}"


def _unit_suffix(unit: str) -> str:
    if unit in _UNIT_SUFFIXES:
        return _UNIT_SUFFIXES[unit]
    # Annotations such as "{command}" say what is counted: they are no unit.
    return _NOT_IN_LABELS.sub("_", _ANNOTATIONS.sub("", unit)).strip("_")


def label_name(key: str) -> str:
    """The Prometheus label of an OpenTelemetry attribute key."""
    name = _NOT_IN_LABELS.sub("_", key)
    return name if not name[:1].isdigit() else f"key_{name}"


@dataclass
class _Family:
    kind: str
    documentation: str
    points: list[Any] = field(default_factory=list)

    def metric(self, name: str) -> Metric:
        labels = sorted({label_name(key) for point in self.points for key in point.attributes})
        if self.kind == _HISTOGRAM:
            histogram = HistogramMetricFamily(name, self.documentation, labels=labels)
            for point in self.points:
                histogram.add_metric(_values(point, labels), _buckets(point), point.sum)
            return histogram
        family = (CounterMetricFamily if self.kind == _COUNTER else GaugeMetricFamily)(
            name, self.documentation, labels=labels
        )
        for point in self.points:
            family.add_metric(_values(point, labels), point.value)
        return family


def _values(point: NumberDataPoint | HistogramDataPoint, labels: Sequence[str]) -> list[str]:
    """The point's label values in ``labels`` order; absent ones empty, as Prometheus reads
    them. Keys that map to one label join their values with ``;``."""
    found: dict[str, list[str]] = {}
    for key, value in (point.attributes or {}).items():
        found.setdefault(label_name(key), []).append(str(value))
    return [";".join(found.get(label, ())) for label in labels]


def _buckets(point: HistogramDataPoint) -> list[tuple[str, float]]:
    """Cumulative counts per upper bound, ending with ``+Inf`` (everything)."""
    buckets, running = [], 0
    for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False):
        running += count
        buckets.append((str(float(bound)), float(running)))
    buckets.append(("+Inf", float(point.count)))
    return buckets


def _kind(data: object) -> str | None:
    if isinstance(data, Sum):
        return _COUNTER if data.is_monotonic else _GAUGE
    if isinstance(data, Gauge):
        return _GAUGE
    if isinstance(data, Histogram):
        return _HISTOGRAM
    return None  # exponential histograms: Pachyderm makes none


class _Families:
    """A collection as Prometheus metric families (a prometheus_client collector)."""

    def __init__(self, collected: MetricsData | None) -> None:
        self._collected = collected

    def collect(self) -> Iterator[Metric]:
        families: dict[str, _Family] = {}
        resources = self._collected.resource_metrics if self._collected else ()
        for resource in resources:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = _kind(metric.data)
                    if kind is None:
                        continue
                    name = metric_name(metric.name, metric.unit or "")
                    family = families.setdefault(name, _Family(kind, metric.description or ""))
                    # One name in several scopes is one family; of another kind, it cannot be.
                    if family.kind == kind:
                        family.points.extend(metric.data.data_points)
        for name, family in families.items():
            yield family.metric(name)
