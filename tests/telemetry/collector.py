"""An OpenTelemetry collector on localhost (OTLP over HTTP) that keeps what it receives."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue


@dataclass(frozen=True)
class ExportedSpan:
    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    attributes: dict[str, object]
    service: str


@dataclass
class Collector:
    url: str
    spans: list[ExportedSpan] = field(default_factory=list)
    metrics: set[str] = field(default_factory=set)

    def named(self, name: str) -> list[ExportedSpan]:
        return [span for span in self.spans if span.name == name]


def _values(attributes: list[KeyValue]) -> dict[str, object]:
    return {
        a.key: getattr(a.value, a.value.WhichOneof("value") or "string_value") for a in attributes
    }


def _receive(collector: Collector, path: str, body: bytes) -> None:
    if path == "/v1/traces":
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
            service = str(_values(list(resource.resource.attributes)).get("service.name"))
            for scope in resource.scope_spans:
                collector.spans.extend(
                    ExportedSpan(
                        span.name,
                        int.from_bytes(span.trace_id),
                        int.from_bytes(span.span_id),
                        int.from_bytes(span.parent_span_id) if span.parent_span_id else None,
                        _values(list(span.attributes)),
                        service,
                    )
                    for span in scope.spans
                )
    elif path == "/v1/metrics":
        for resource in ExportMetricsServiceRequest.FromString(body).resource_metrics:
            for scope in resource.scope_metrics:
                collector.metrics.update(metric.name for metric in scope.metrics)


@contextmanager
def collector() -> Iterator[Collector]:
    """A running collector; its ``url`` is the base for ``PACHYDERM_OTLP_ENDPOINT``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    received = Collector(f"http://127.0.0.1:{server.server_address[1]}")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                _receive(received, self.path, body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
