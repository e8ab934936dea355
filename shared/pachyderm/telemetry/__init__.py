"""Observability: traces, metrics, structured logs and health endpoints.

A process calls :func:`setup_telemetry` (and :func:`configure_logging`) once;
the client, the workers and the effect dispatcher then trace the whole path
of a command, W3C trace context travelling in the message headers, and
measure what they do. :func:`health_routes` (or :func:`metrics_route`
alone) serve ``/healthz``, ``/readyz`` and ``/metrics`` from any Starlette
app; :class:`HealthServer` serves them from a worker.

What needs the OpenTelemetry SDK, Starlette or uvicorn (the health routes, the
Prometheus reader, :func:`setup_telemetry`) is imported on first use: the
client and the workers' hooks report through the OpenTelemetry API alone, so
``import pachyderm`` (and ``pachyderm --help``) loads none of those libraries.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ._checks import Check, broker_check, database_check
from ._logging import configure_logging
from ._telemetry import Telemetry, install_telemetry
from ._tracing import traced
from ._worker_hooks import TelemetryHooks

if TYPE_CHECKING:
    from ._health import HealthServer, health_routes, metrics_response, metrics_route
    from ._prometheus import PrometheusReader
    from ._setup import setup_telemetry
else:
    # Hidden from type checkers, which then still report a misspelt name.
    __getattr__ = lazy_names(
        __name__,
        {
            "HealthServer": "._health",
            "health_routes": "._health",
            "metrics_response": "._health",
            "metrics_route": "._health",
            "PrometheusReader": "._prometheus",
            "setup_telemetry": "._setup",
        },
    )

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
