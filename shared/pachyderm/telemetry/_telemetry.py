"""The installed telemetry: the one place Pachyderm's code gets its tracer and meters.

Pachyderm never reads OpenTelemetry's global providers: tests install
in-memory ones here, and a process that installs nothing pays for no-ops only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._instruments import Instruments

if TYPE_CHECKING:
    # Types only: the SDK loads with the process that sets telemetry up, so that a
    # command that sets up none (``pachyderm --help``) starts without it.
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from ._prometheus import PrometheusReader


@dataclass(frozen=True)
class Telemetry:
    """The OpenTelemetry providers Pachyderm reports to; without them it reports nothing.

    ``prometheus``, when given, must be one of ``meter_provider``'s readers:
    it is what ``/metrics`` serves.
    """

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    prometheus: PrometheusReader | None = None

    def shutdown(self) -> None:
        """Export what is pending, then stop the providers."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


_installed = Telemetry()
_instruments = Instruments()


def install_telemetry(telemetry: Telemetry) -> None:
    """Report to ``telemetry`` from now on (``Telemetry()``: report nothing)."""
    global _installed, _instruments  # noqa: PLW0603 - the process-wide switch, by design
    _instruments = Instruments(telemetry.tracer_provider, telemetry.meter_provider)
    _installed = telemetry


def installed() -> Telemetry:
    """The telemetry installed last."""
    return _installed


def instruments() -> Instruments:
    """The tracer and instruments of the installed telemetry."""
    return _instruments
