"""A command's sent time, and the refusal of commands older than the store remembers.

The store keeps a command's id for a window (``PACHYDERM_COMMAND_RETENTION``)
and prunes it after: a copy arriving later would apply again. So a command
carries the time it was sent (header ``pachyderm-sent-at``, milliseconds since
the Unix epoch, UTC; the client and the gateway set it), and a worker refuses,
before deciding anything, a command sent longer ago than the window less a
safety margin (``PACHYDERM_COMMAND_EXPIRY_MARGIN``): it is answered ``expired``
(:class:`~pachyderm.CommandExpiredError`), never applied.

Invariant: a command a worker accepts was sent at most ``retention - margin``
ago by the worker's clock; any earlier application of it was recorded no
earlier than it was sent, and the pruner deletes only ids recorded more than
``retention`` ago by the database's clock. The margin covers the clocks'
disagreement (publisher, worker, database) and the moments between the check
and the commit, so a command id is never pruned while a copy of it can still
be accepted. A sent time further in the future than the margin means a clock
that far off, under which that reasoning fails: it is bad input
(:class:`~pachyderm.InvalidSentTimeError`), as is a value that is not a
number of milliseconds. A command without the header (a publisher in another
language that does not set it) is accepted: the guarantee then rests on the
publisher not re-sending it after the window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ._errors import CommandExpiredError, InvalidSentTimeError
from .transport import Message

SENT_AT_HEADER = "pachyderm-sent-at"
"""When the command was first sent: milliseconds since the Unix epoch (an integer)."""

# 2000-01-01T00:00:00Z in milliseconds. An earlier value is no sent time in
# milliseconds (seconds since the epoch land in January 1970).
_EARLIEST_MS = 946_684_800_000

DEFAULT_RETENTION = 7 * 24 * 3600.0
DEFAULT_MARGIN = 3600.0


def now_ms() -> int:
    """The current time as the header carries it."""
    return time.time_ns() // 1_000_000


def stamped(message: Message) -> Message:
    """``message`` with its sent time: now, unless it carries one already (a retry
    that kept the first send's time keeps it)."""
    if SENT_AT_HEADER in message.headers:
        return message
    return replace(message, headers={**message.headers, SENT_AT_HEADER: now_ms()})


def with_sent_at(message: Message, sent: datetime | None) -> Message:
    """``message`` carrying ``sent`` (timezone-aware) as its sent time, or as it is
    for None: a caller retrying a command it first sent earlier passes the first
    send's time, so the window counts from it (the client's ``sent_at``)."""
    if sent is None:
        return message
    if sent.tzinfo is None or sent.utcoffset() is None:
        raise ValueError(f"sent_at must be timezone-aware (e.g. UTC), not {sent.isoformat()}")
    stamp = int(sent.timestamp() * 1000)
    return replace(message, headers={**message.headers, SENT_AT_HEADER: stamp})


def sent_at(headers: Mapping[str, Any]) -> float | None:
    """The sent time in ``headers`` (Unix seconds), None without the header;
    :class:`~pachyderm.InvalidSentTimeError` if it is not milliseconds since the epoch."""
    if SENT_AT_HEADER not in headers:
        return None
    value = headers[SENT_AT_HEADER]
    # bool is an int, but never a time; a float is accepted if it is a whole number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSentTimeError(
            f"{SENT_AT_HEADER} must be an integer (milliseconds since the Unix epoch),"
            f" not {type(value).__name__}"
        )
    if not math.isfinite(value) or value != int(value) or value < _EARLIEST_MS:
        raise InvalidSentTimeError(
            f"{SENT_AT_HEADER} must be milliseconds since the Unix epoch, not {value!r}"
            + (" (seconds?)" if 0 < value < _EARLIEST_MS else "")
        )
    return value / 1000


def _shown(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class CommandWindow:
    """How long command ids are kept (``retention``, seconds) and the safety margin
    a command must be younger than that by to be accepted (``margin``)."""

    retention: float = DEFAULT_RETENTION
    margin: float = DEFAULT_MARGIN

    def __post_init__(self) -> None:
        if not 0 <= self.margin < self.retention:
            raise ValueError(
                f"the expiry margin ({self.margin}s) must be at least 0 and shorter than"
                f" the command retention ({self.retention}s)"
            )

    @property
    def accepted_for(self) -> float:
        """Seconds after its sending during which a command is accepted."""
        return self.retention - self.margin

    def check(self, headers: Mapping[str, Any], now: float | None = None) -> None:
        """Refuse the command these headers come with if it is too old
        (:class:`~pachyderm.CommandExpiredError`) or its sent time is bad input
        (:class:`~pachyderm.InvalidSentTimeError`); ``now`` in Unix seconds."""
        sent = sent_at(headers)
        if sent is None:
            return
        now = time.time() if now is None else now
        if sent > now + self.margin:
            raise InvalidSentTimeError(
                f"{SENT_AT_HEADER} {_shown(sent)} is {sent - now:.0f}s ahead of this worker's"
                f" clock, more than the {self.margin:.0f}s allowed: the publisher's clock is wrong"
            )
        if now - sent > self.accepted_for:
            raise CommandExpiredError(
                f"sent at {_shown(sent)}, {now - sent:.0f}s ago: command ids are kept"
                f" {self.retention:.0f}s and a command is accepted for {self.accepted_for:.0f}s"
                " after it was sent; it was not applied now (send it again under a new"
                " command id if it must still apply)"
            )
