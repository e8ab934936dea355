"""Spans on Pachyderm's tracer: free when tracing is off."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry.trace import INVALID_SPAN, Span, SpanKind
from opentelemetry.util.types import Attributes

from ._propagation import extract
from ._telemetry import instruments

NO_SPAN = nullcontext(INVALID_SPAN)
"""What every span is when tracing is off (reusable, reentrant)."""


def traced(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    carrier: Mapping[str, Any] | None = None,
    attributes: Attributes = None,
) -> AbstractContextManager[Span]:
    """A span on Pachyderm's tracer around a ``with`` block, current inside it.

    Without ``carrier`` it is a child of the current span. With one (e.g. a
    request's HTTP headers) it continues the trace of its W3C
    ``traceparent``: a gateway passes its request headers with
    ``kind=SpanKind.SERVER`` and a low-cardinality ``name`` such as
    ``"POST /entities/{type}/{id}"``, so the commands it sends join the
    caller's trace. An exception leaving the block is recorded on the span.
    Set further attributes only when the span ``is_recording()``.
    """
    tracing = instruments()
    if not tracing.tracing:
        return NO_SPAN
    context = extract(carrier) if carrier is not None else None
    return tracing.tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=attributes
    )
