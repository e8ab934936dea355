"""A process's telemetry from its settings: Prometheus always, OTLP when configured."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pachyderm import Settings
from pachyderm.telemetry import Telemetry, install_telemetry, setup_telemetry, traced
from pachyderm.telemetry._telemetry import installed, instruments

from .collector import collector


@pytest.fixture(autouse=True)
def uninstalled() -> Iterator[None]:
    yield
    install_telemetry(Telemetry())


def test_without_a_collector_metrics_are_kept_for_prometheus_and_no_span_recorded() -> None:
    telemetry = setup_telemetry(Settings(otlp_endpoint=None), "pachyderm-test")
    try:
        assert installed() is telemetry
        assert telemetry.tracer_provider is None
        with traced("work") as span:
            assert not span.is_recording()
        instruments().batch_size.record(3)
        assert telemetry.prometheus is not None
        assert b"pachyderm_batch_size_count 1.0" in telemetry.prometheus.render()
    finally:
        telemetry.shutdown()


def test_with_a_collector_spans_and_metrics_are_exported_over_otlp() -> None:
    with collector() as received:
        telemetry = setup_telemetry(
            Settings(otlp_endpoint=received.url + "/", namespace="shop"),
            "pachyderm-test",
            instance="w-1",
        )
        with traced("work") as span:
            assert span.is_recording()
        instruments().batch_size.record(3)
        telemetry.shutdown()  # flushes both
    [work] = received.named("work")
    assert work.trace_id == span.get_span_context().trace_id
    assert work.service == "pachyderm-test"
    assert "pachyderm.batch.size" in received.metrics


def test_the_standard_otel_variables_name_the_collector_and_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with collector() as received:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", received.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
        telemetry = setup_telemetry(Settings(otlp_endpoint=None), "pachyderm-test")
        with traced("work"):
            pass
        telemetry.shutdown()
    [work] = received.named("work")
    assert work.service == "checkout"


def test_pachyderms_own_endpoint_wins_over_the_standard_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with collector() as received:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # discard port
        telemetry = setup_telemetry(Settings(otlp_endpoint=received.url), "pachyderm-test")
        with traced("work"):
            pass
        telemetry.shutdown()
    [work] = received.named("work")
    assert work.service == "pachyderm-test"
