"""The timer a command was fired by, as message headers (see docs/protocol.md).

A timer's command for another entity travels as an effect; these headers tell
its handler which timer fired it (``current_timer()``). They are context for
the handler, not authority: a publisher may set them on any command, so an
entity must not grant anything on their say-so.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ._errors import InvalidInputError
from ._timers import FiredTimer

KEY_HEADER = "pachyderm-timer-key"
DUE_HEADER = "pachyderm-timer-due"
MISSED_HEADER = "pachyderm-timer-missed"
EVERY_HEADER = "pachyderm-timer-every-us"


def timer_headers(timer: Mapping[str, Any]) -> dict[str, Any]:
    """Headers for the timer an outbox row carries (``key``, ``due``, ``missed``, ``every_us``)."""
    headers = {
        KEY_HEADER: timer["key"],
        DUE_HEADER: timer["due"],
        MISSED_HEADER: int(timer.get("missed") or 0),
    }
    if timer.get("every_us"):
        headers[EVERY_HEADER] = int(timer["every_us"])
    return headers


def timer_from_headers(headers: Mapping[str, Any]) -> FiredTimer | None:
    """The timer named by ``headers``; None if none is; InvalidInputError if malformed."""
    key = headers.get(KEY_HEADER)
    if key is None:
        return None
    due, missed, every = (
        headers.get(DUE_HEADER),
        headers.get(MISSED_HEADER, 0),
        headers.get(EVERY_HEADER),
    )
    try:
        if not isinstance(key, str) or not isinstance(due, str):
            raise ValueError("key and due must be text")
        if not isinstance(missed, int) or missed < 0:
            raise ValueError("missed must be a count")
        if every is not None and (not isinstance(every, int) or every <= 0):
            raise ValueError("every must be a positive count of microseconds")
        when = datetime.fromisoformat(due)
        if when.utcoffset() is None:
            raise ValueError("due must carry its UTC offset")
    except ValueError as error:
        raise InvalidInputError(f"bad timer headers: {error}") from error
    return FiredTimer(key, when, missed, timedelta(microseconds=every) if every else None)
