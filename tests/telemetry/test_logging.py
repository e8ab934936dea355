"""Logs: JSON lines with trace ids inside spans, text for people, no passwords in either."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from pachyderm import Settings
from pachyderm.telemetry import traced
from pachyderm.telemetry._logging import JsonFormatter, TextFormatter, logging_configured

from .conftest import Recorded


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    log = logging.getLogger("pachyderm.test")
    return log.makeRecord(log.name, logging.WARNING, __file__, 1, message, args, None, extra=extra)


def test_a_json_line_inside_a_span_carries_its_trace_and_span_ids(recorded: Recorded) -> None:
    with traced("work") as span:
        line = JsonFormatter().format(record("took %d ms", 12, partition=3))
    entry = json.loads(line)
    context = span.get_span_context()
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "WARNING",
        "pachyderm.test",
        "took 12 ms",
    )
    assert entry["partition"] == 3
    assert entry["time"].endswith("+00:00")


def test_a_json_line_outside_spans_has_no_trace_ids_and_carries_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(failed))
    assert "trace_id" not in entry
    assert "span_id" not in entry
    assert "ValueError: boom" in entry["exception"]


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_passwords_in_urls_never_reach_a_log_line(formatter: logging.Formatter) -> None:
    line = formatter.format(
        record(
            "connecting to %s and %s", "amqp://guest:hunter2@broker/", "postgresql://u:p%40ss@db/x"
        )
    )
    assert "hunter2" not in line
    assert "p%40ss" not in line
    assert "amqp://guest:***@broker/" in line
    assert "postgresql://u:***@db/x" in line


@pytest.mark.parametrize(("log_format", "kind"), [("json", JsonFormatter), ("text", TextFormatter)])
def test_logging_takes_the_configured_format_for_a_block_and_is_restored_after(
    log_format: str, kind: type[logging.Formatter]
) -> None:
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    with logging_configured(Settings(log_format=log_format)):
        [handler] = root.handlers
        assert isinstance(handler.formatter, kind)
        assert root.level == logging.INFO
    assert (root.handlers, root.level) == before
