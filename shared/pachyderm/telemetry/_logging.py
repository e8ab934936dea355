"""A process's logs: human-readable text, or one JSON object per line with trace ids.

Both formats mask the password of any URL in a record, whoever logged it:
``amqp://user:secret@host`` prints as ``amqp://user:***@host``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import get_current_span

from .._settings import Settings

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_URL_PASSWORD = re.compile(r"(?P<user>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")
# What every record has; anything else came as ``extra`` and is logged too.
_STANDARD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def redact(text: str) -> str:
    """``text`` with the passwords of the URLs in it masked."""
    return _URL_PASSWORD.sub(r"\g<user>:***@", text)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, for people."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``;
    ``trace_id`` and ``span_id`` inside a span; the record's ``extra`` fields;
    ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span_context = get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD_FIELDS:
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


def configure_logging(settings: Settings, level: int | None = None) -> None:
    """Log to stderr in ``settings.log_format`` (``text`` or ``json``) from ``level`` on
    (by default ``settings.log_level``).

    For a process's entry point: it replaces the root logger's handlers
    (detached, not closed: they may belong to someone else).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for replaced in root.handlers[:]:
        root.removeHandler(replaced)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper() if level is None else level)


@contextmanager
def logging_configured(settings: Settings) -> Iterator[None]:
    """:func:`configure_logging` for a block; then the root logger as it was, so that a
    process's main may run inside another process (as in tests)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(settings)
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
