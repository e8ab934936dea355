"""Process metrics: CPU time, resident memory and open file descriptors of this process.

Observed when a reader collects, as OpenTelemetry's process conventions name
them (https://opentelemetry.io/docs/specs/semconv/system/process-metrics/).
Memory and descriptors are read from ``/proc`` (Linux, as in the container
images); where it is missing those gauges report no point rather than a guess.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from opentelemetry.metrics import CallbackOptions, Meter, Observation

_STATM = Path("/proc/self/statm")
_FDS = Path("/proc/self/fd")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def observe_process(meter: Meter) -> None:
    """Create the process's observable instruments on ``meter``."""
    meter.create_observable_counter(
        "process.cpu.time",
        callbacks=[_cpu],
        unit="s",
        description="CPU seconds used by this process, by mode: user or system",
    )
    meter.create_observable_gauge(
        "process.memory.usage",
        callbacks=[_memory],
        unit="By",
        description="Resident memory of this process",
    )
    meter.create_observable_gauge(
        "process.unix.file_descriptor.count",
        callbacks=[_descriptors],
        unit="{file_descriptor}",
        description="File descriptors this process has open",
    )


def _cpu(_: CallbackOptions) -> Iterable[Observation]:
    times = os.times()
    return [
        Observation(times.user, {"cpu.mode": "user"}),
        Observation(times.system, {"cpu.mode": "system"}),
    ]


def _memory(_: CallbackOptions) -> Iterable[Observation]:
    try:
        resident_pages = int(_STATM.read_text().split()[1])
    except OSError:
        return []
    return [Observation(resident_pages * _PAGE)]


def _descriptors(_: CallbackOptions) -> Iterable[Observation]:
    try:
        return [Observation(sum(1 for _ in _FDS.iterdir()))]
    except OSError:
        return []
