"""The Prometheus text format: parsed back with prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from examples import counter
from pachyderm import App
from pachyderm._embedded import embedded
from pachyderm.telemetry import PrometheusReader
from pachyderm.telemetry._prometheus import metric_name

from .conftest import Recorded

Families = dict[str, tuple[str, list[Sample]]]


def parse(text: bytes) -> Families:
    """Family name -> (type, samples)."""
    return {
        family.name: (family.type, family.samples)
        for family in text_string_to_metric_families(text.decode())
    }


@pytest.fixture
def meter() -> Iterator[tuple[Meter, PrometheusReader]]:
    reader = PrometheusReader()
    provider = MeterProvider([reader])
    yield provider.get_meter("test"), reader
    provider.shutdown()


async def test_pachyderms_instruments_render_as_prometheus_families(recorded: Recorded) -> None:
    async with embedded(App([counter.Counter]), partitions=2) as fleet:
        await fleet.client.call(counter.Counter.ref("c"), counter.Increment(amount=2))
        families = parse(recorded.prometheus.render())

    kind, samples = families["pachyderm_commands"]
    assert kind == "counter"
    assert [(s.name, s.labels, s.value) for s in samples] == [
        (
            "pachyderm_commands_total",
            {"entity_type": "counter", "kind": "command", "outcome": "ok"},
            1.0,
        )
    ]
    assert families["pachyderm_partitions_owned"][0] == "gauge"
    assert families["pachyderm_partitions_owned"][1][0].value == 2
    assert families["pachyderm_entities_cached"][1][0].value == 1
    for histogram in (
        "pachyderm_command_duration_seconds",
        "pachyderm_commit_duration_seconds",
        "pachyderm_batch_size",
    ):
        kind, samples = families[histogram]
        assert kind == "histogram"
        by_name = {s.name: s for s in samples if not s.name.endswith("_bucket")}
        assert by_name[f"{histogram}_count"].value == 1
        buckets = [s for s in samples if s.name.endswith("_bucket")]
        assert buckets[-1].labels["le"] == "+Inf"
        assert buckets[-1].value == 1
        counts = [s.value for s in buckets]
        assert counts == sorted(counts)  # cumulative


def test_histograms_have_cumulative_buckets_a_sum_and_a_count(
    meter: tuple[Meter, PrometheusReader],
) -> None:
    instruments, reader = meter
    latency = instruments.create_histogram(
        "http.latency", unit="ms", explicit_bucket_boundaries_advisory=[10, 100]
    )
    for value in (5, 50, 60, 500):
        latency.record(value)
    _, samples = parse(reader.render())["http_latency_milliseconds"]
    assert [(s.name, s.labels.get("le"), s.value) for s in samples] == [
        ("http_latency_milliseconds_bucket", "10.0", 1),
        ("http_latency_milliseconds_bucket", "100.0", 3),
        ("http_latency_milliseconds_bucket", "+Inf", 4),
        ("http_latency_milliseconds_count", None, 4),
        ("http_latency_milliseconds_sum", None, 615),
    ]


def test_label_values_are_escaped_and_names_made_valid(
    meter: tuple[Meter, PrometheusReader],
) -> None:
    instruments, reader = meter
    requests = instruments.create_counter(
        "http.requests", unit="{request}", description='Requests: "all"\nof them \\ here'
    )
    hostile = 'a "quoted" \\ back\nslash'
    requests.add(2, {"http.route": hostile, "9th": "x"})
    requests.add(1, {"http.route": "/plain"})
    families = parse(reader.render())
    kind, samples = families["http_requests"]
    assert kind == "counter"
    assert [(s.name, s.labels, s.value) for s in samples] == [
        ("http_requests_total", {"http_route": hostile, "key_9th": "x"}, 2),
        ("http_requests_total", {"http_route": "/plain", "key_9th": ""}, 1),
    ]


def test_up_down_counters_and_gauges_are_gauges(meter: tuple[Meter, PrometheusReader]) -> None:
    instruments, reader = meter
    instruments.create_up_down_counter("queue.depth").add(-3)
    instruments.create_gauge("temperature", unit="Cel").set(21.5)
    families = parse(reader.render())
    assert families["queue_depth"][0] == "gauge"
    assert families["queue_depth"][1][0].value == -3
    assert families["temperature_Cel"][1][0].value == 21.5


def test_a_reader_outside_any_meter_provider_renders_nothing() -> None:
    assert PrometheusReader().render() == b""


@pytest.mark.parametrize(
    ("name", "unit", "expected"),
    [
        ("pachyderm.command.duration", "s", "pachyderm_command_duration_seconds"),
        ("already_seconds", "s", "already_seconds"),
        ("pachyderm.commands", "{command}", "pachyderm_commands"),
        ("payload.size", "By", "payload_size_bytes"),
        ("hit.ratio", "1", "hit_ratio"),
        ("9lives", "", "_9lives"),
        ("a..b-c", "", "a_b_c"),
    ],
)
def test_metric_names_follow_opentelemetrys_rules_for_prometheus(
    name: str, unit: str, expected: str
) -> None:
    assert metric_name(name, unit) == expected
