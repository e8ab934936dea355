"""One trace from the HTTP caller through the gateway, the worker and the effect handler,
recorded in memory; and the gateway's ``/metrics`` serving what the fleet measured."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from examples import counter
from pachyderm import App, Client, EffectHandler
from pachyderm._embedded import embedded
from pachyderm.gateway import GatewayOptions, create_app
from pachyderm.telemetry import PrometheusReader, Telemetry, install_telemetry

from ..waiting import eventually
from .serving import CALLER, TOKENS, serving

COMMANDS, EFFECTS = "pachyderm.commands", "pachyderm.effects"
GATEWAY_SPAN = "POST /entities/{type}/{id}/commands/{command}"
CROSSING = "/entities/counter/key:c/commands/Increment"


class Mailer(EffectHandler):
    """The counter's effect handler, keeping what it was given."""

    name = "admin_mailer"

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def dispatch(self, payload: Any, config: Mapping[str, Any]) -> None:
        self.sent.append(payload)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans kept in memory, and metrics for ``/metrics``, for this test only."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider([prometheus := PrometheusReader()])
    install_telemetry(Telemetry(tracer_provider, meter_provider, prometheus))
    try:
        yield spans
    finally:
        install_telemetry(Telemetry())
        tracer_provider.shutdown()
        meter_provider.shutdown()


@pytest.fixture
def mailer() -> Mailer:
    return Mailer()


@pytest.fixture
async def http(exporter: InMemorySpanExporter, mailer: Mailer) -> AsyncIterator[httpx.AsyncClient]:
    """The embedded fleet's gateway over real HTTP, with the caller's token."""
    app = App([counter.Counter], effect_handlers=[mailer])
    async with embedded(app) as fleet:
        client = Client(app, fleet.transport)
        await client.start()
        asgi = create_app(client, fleet.store, GatewayOptions(tokens=TOKENS), app=app)
        async with serving(asgi, headers=CALLER) as started:
            yield started


def named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [span for span in exporter.get_finished_spans() if span.name == name]
    return span


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


async def ended(exporter: InMemorySpanExporter, *names: str) -> None:
    """Wait for spans ``names``: the worker's and the effect's may end after the reply."""

    async def all_ended() -> bool:
        return set(names) <= {span.name for span in exporter.get_finished_spans()}

    await eventually(all_ended)


async def test_a_request_crossing_ten_is_one_trace_from_gateway_to_effect_handler(
    http: httpx.AsyncClient, exporter: InMemorySpanExporter, mailer: Mailer
) -> None:
    response = await http.post(CROSSING, json={"amount": 12})
    assert response.status_code == 200, response.text
    await ended(exporter, f"process {COMMANDS}", f"process {EFFECTS}")
    assert mailer.sent == [{"threshold": 10}]

    spans = exporter.get_finished_spans()
    assert sorted(span.name for span in spans) == sorted(
        [
            GATEWAY_SPAN,
            f"publish {COMMANDS}",
            f"process {COMMANDS}",
            "load",
            "handle",
            "commit",
            f"publish {EFFECTS}",
            f"process {EFFECTS}",
        ]
    )
    assert len({span.context.trace_id for span in spans}) == 1
    entity_id = str(counter.Counter.ref("c").id)
    assert all(entity_id not in span.name and "key:c" not in span.name for span in spans)

    gateway = named(exporter, GATEWAY_SPAN)
    assert (gateway.kind, gateway.parent) == (SpanKind.SERVER, None)
    assert gateway.attributes == {
        "http.request.method": "POST",
        "http.route": "/entities/{type}/{id}/commands/{command}",
        "http.response.status_code": 200,
        "pachyderm.entity.type": "counter",
        "pachyderm.entity.id": "key:c",
    }
    # gateway -> client publish -> worker process -> (load, handle, commit, effect publish)
    # -> effect dispatch: parent by parent, in one trace.
    publish = named(exporter, f"publish {COMMANDS}")
    process = named(exporter, f"process {COMMANDS}")
    effect_publish = named(exporter, f"publish {EFFECTS}")
    assert parent_id(publish) == gateway.context.span_id
    assert parent_id(process) == publish.context.span_id
    for child in ("load", "handle", "commit", f"publish {EFFECTS}"):
        assert parent_id(named(exporter, child)) == process.context.span_id, child
    assert parent_id(named(exporter, f"process {EFFECTS}")) == effect_publish.context.span_id


async def test_a_callers_traceparent_is_continued(
    http: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    trace_id, span_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    traceparent = {"traceparent": f"00-{trace_id}-{span_id}-01"}
    response = await http.post(CROSSING, json={"amount": 1}, headers=traceparent)
    assert response.status_code == 200, response.text

    await ended(exporter, f"process {COMMANDS}")
    gateway = named(exporter, GATEWAY_SPAN)
    assert format(gateway.context.trace_id, "032x") == trace_id
    assert format(parent_id(gateway) or 0, "016x") == span_id
    assert gateway.parent is not None
    assert gateway.parent.is_remote
    process = named(exporter, f"process {COMMANDS}")
    assert format(process.context.trace_id, "032x") == trace_id


async def test_a_callers_mistake_is_the_spans_status_but_no_span_error(
    http: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    assert (await http.get("/entities/counter/not-a-uuid")).status_code == 400
    assert (
        await http.post(CROSSING, json={"amount": 1}, headers={"Authorization": ""})
    ).status_code == 401
    [state, command] = sorted(exporter.get_finished_spans(), key=lambda span: span.name)
    assert state.name == "GET /entities/{type}/{id}"
    assert (state.attributes or {})["http.response.status_code"] == 400
    assert (command.attributes or {})["http.response.status_code"] == 401
    assert {state.status.status_code, command.status.status_code} == {StatusCode.UNSET}


async def test_health_and_metrics_are_not_traced_and_metrics_serve_the_fleets_measures(
    http: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    assert (await http.post(CROSSING, json={"amount": 2})).status_code == 200
    await ended(exporter, f"process {COMMANDS}")
    exporter.clear()
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await http.get(path)).status_code == 200, path
    metrics = await http.get("/metrics")
    assert metrics.status_code == 200
    assert exporter.get_finished_spans() == ()

    ok = {"entity_type": "counter", "kind": "command", "outcome": "ok"}
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
    }
    assert samples["pachyderm_commands_total", tuple(sorted(ok.items()))] == 1
    assert samples["pachyderm_command_duration_seconds_count", tuple(sorted(ok.items()))] == 1
    assert samples["pachyderm_commit_duration_seconds_count", ()] == 1
    assert samples["pachyderm_partitions_owned", ()] == 4
