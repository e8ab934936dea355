"""Messaging spans after OpenTelemetry's conventions for RabbitMQ.

Span names are ``"{operation} {exchange}"`` (``publish pachyderm.commands``,
``process pachyderm.effects``): low-cardinality, with the entity id, routing
key and message id as attributes only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, get_current_span

from .._wire import ENTITY_TYPE_HEADER
from ..transport import Message
from . import _conventions as semconv
from ._propagation import extract, inject, stamp
from ._telemetry import instruments
from ._tracing import NO_SPAN


def operation_attributes(exchange: str, operation: str) -> dict[str, Any]:
    """The conventional attributes of a span publishing to or processing from ``exchange``."""
    return {
        semconv.MESSAGING_SYSTEM: semconv.RABBITMQ,
        semconv.DESTINATION: exchange,
        semconv.OPERATION_NAME: operation,
        semconv.OPERATION_TYPE: semconv.SEND if operation == semconv.PUBLISH else operation,
    }


def message_attributes(exchange: str, message: Message, operation: str) -> dict[str, Any]:
    """The conventional attributes of a span about one message."""
    attributes = operation_attributes(exchange, operation)
    if message.routing_key:
        attributes[semconv.ROUTING_KEY] = message.routing_key
    if message.message_id:
        attributes[semconv.MESSAGE_ID] = message.message_id
    entity_type = message.headers.get(ENTITY_TYPE_HEADER)
    if isinstance(entity_type, str):  # a command: its routing key is the entity id
        attributes[semconv.ENTITY_TYPE] = entity_type
        attributes[semconv.ENTITY_ID] = message.routing_key
    return attributes


def links_to(contexts: Iterable[Context]) -> list[Link]:
    """Links to the spans these contexts carry (the messages' creation contexts)."""
    found = (get_current_span(context).get_span_context() for context in contexts)
    return [Link(span_context) for span_context in found if span_context.is_valid]


@contextmanager
def started(
    name: str,
    kind: SpanKind,
    *,
    context: Context | None = None,
    links: list[Link] | None = None,
) -> Iterator[Span]:
    """A current span that records the type of an exception leaving it (``error.type``)."""
    with instruments().tracer.start_as_current_span(
        name, context=context, kind=kind, links=links
    ) as current:
        try:
            yield current
        except Exception as error:
            current.set_attribute(semconv.ERROR_TYPE, type(error).__qualname__)
            raise


def publishing(
    exchange: str, message: Message, *, parent: Context | None = None
) -> AbstractContextManager[Message]:
    """A PRODUCER span around publishing ``message`` to ``exchange``.

    Gives what to publish: ``message`` with the span's trace context and the
    publish time in its headers. ``parent`` continues another trace than the
    current one (an effect continues its command's); the current span is
    then linked.
    """
    telemetry = instruments()
    if telemetry.tracing:
        return _publishing(exchange, message, parent)
    # Untraced, the publish time still serves the latency histogram.
    return nullcontext(_with_headers(message, traced=False) if telemetry.metering else message)


@contextmanager
def _publishing(exchange: str, message: Message, parent: Context | None) -> Iterator[Message]:
    links = None if parent is None else _link_to_current()
    with started(
        f"{semconv.PUBLISH} {exchange}", SpanKind.PRODUCER, context=parent, links=links
    ) as current:
        if current.is_recording():
            current.set_attributes(message_attributes(exchange, message, semconv.PUBLISH))
        yield _with_headers(message, traced=True)


def _link_to_current() -> list[Link]:
    span_context = get_current_span().get_span_context()
    return [Link(span_context)] if span_context.is_valid else []


def _with_headers(message: Message, *, traced: bool) -> Message:
    headers = dict(message.headers)
    if traced:
        inject(headers)
    stamp(headers)
    return replace(message, headers=headers)


def consuming(exchange: str, message: Message, *, group: str) -> AbstractContextManager[Span]:
    """A CONSUMER span around processing one ``message`` from ``exchange``, continuing
    the trace its headers carry (and linking the span that published it)."""
    if not instruments().tracing:
        return NO_SPAN
    return _consuming(exchange, message, group)


@contextmanager
def _consuming(exchange: str, message: Message, group: str) -> Iterator[Span]:
    context = extract(message.headers)
    with started(
        f"{semconv.PROCESS} {exchange}",
        SpanKind.CONSUMER,
        context=context,
        links=links_to([context]),
    ) as current:
        if current.is_recording():
            current.set_attributes(message_attributes(exchange, message, semconv.PROCESS))
            current.set_attribute(semconv.CONSUMER_GROUP, group)
        yield current
