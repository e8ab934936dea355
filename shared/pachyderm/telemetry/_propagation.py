"""Trace context and publish time in message headers (W3C ``traceparent``/``tracestate``).

Publishers write them, consumers read them; headers may come from any client
in any language, so reading never fails on a value of an unexpected type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from .._expiry import SENT_AT_HEADER, now_ms


class _TextHeaders(Getter[Mapping[str, Any]]):
    """Reads header values that are text; anything else counts as absent."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_TEXT_HEADERS = _TextHeaders()


def inject(headers: dict[str, Any]) -> None:
    """Add the current trace context to ``headers``."""
    propagate.inject(headers)


def stamp(headers: dict[str, Any]) -> None:
    """Add the time of publishing to ``headers``, unless they carry a sent time already
    (the client's: the worker's expiry check reads it)."""
    headers.setdefault(SENT_AT_HEADER, now_ms())


def extract(headers: Mapping[str, Any]) -> Context:
    """The trace context ``headers`` carry (an empty context if none)."""
    return propagate.extract(headers, getter=_TEXT_HEADERS)


def sent_at(headers: Mapping[str, Any], default: float) -> float:
    """When the message was published (Unix seconds), else ``default``."""
    value = headers.get(SENT_AT_HEADER)
    # bool is an int, but never a time.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value / 1000
    return default
