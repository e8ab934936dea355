"""Observability: traces, metrics, structured logs and health endpoints.

A process calls :func:`setup_telemetry` (and :func:`configure_logging`) once;
the client, the workers and the effect dispatcher then trace the whole path
of a command, W3C trace context travelling in the message headers, and
measure what they do. :func:`health_routes` (or :func:`metrics_route`
alone) serve ``/healthz``, ``/readyz`` and ``/metrics`` from any Starlette
app; :class:`HealthServer` serves them from a worker.
"""

from ._checks import Check, broker_check, database_check
from ._health import HealthServer, health_routes, metrics_response, metrics_route
from ._logging import configure_logging
from ._prometheus import PrometheusReader
from ._setup import setup_telemetry
from ._telemetry import Telemetry, install_telemetry
from ._tracing import traced
from ._worker_hooks import TelemetryHooks

__all__ = [
    "Check",
    "HealthServer",
    "PrometheusReader",
    "Telemetry",
    "TelemetryHooks",
    "broker_check",
    "configure_logging",
    "database_check",
    "health_routes",
    "install_telemetry",
    "metrics_response",
    "metrics_route",
    "setup_telemetry",
    "traced",
]
