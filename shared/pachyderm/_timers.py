"""Durable timers: ``Schedule`` and ``Cancel``, effects an entity returns like any other.

A timer is data in the entity's decision and is written in the same
transaction as the command's events, so a rejected or stale command schedules
nothing. It names a command to deliver at a time (to the entity itself, or to
``to``); its ``key`` names it within the entity, and scheduling a key again
replaces the timer of that key. A timer fires at least once, never before its
due time, and its command applies once in effect: the fired command's id is
derived from the entity, the key, the scheduling and the due time, so the
inbox absorbs every repeat.

Inside ``handle`` of a command a timer fired, :func:`current_timer` tells which
timer it was, when it was due and how many ticks of a periodic timer were
missed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from ._errors import HandlerError
from ._reference import Ref

Missed = Literal["once", "skip", "all"]
"""What a periodic timer does with the ticks that fell due while nothing could fire them.

``once``: one catch-up tick fires for all of them, then the timer goes on on its
grid. ``skip``: they are dropped; the next tick on the grid says how many were.
``all``: each fires, oldest first, at most ``limit`` of them (older ones are dropped).
A tick fired less than one period late is not missed.
"""

MISSED_POLICIES: tuple[str, ...] = get_args(Missed)
MAX_KEY_LENGTH = 200
DEFAULT_LIMIT = 100


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise HandlerError(f"a timer key is a non-empty string of at most {MAX_KEY_LENGTH} chars")


@dataclass(frozen=True, slots=True)
class Schedule:
    """Deliver ``command`` to this entity (or to ``to``) at ``at``, or ``after`` from now.

    ``key`` names the timer within the entity (by default the command's class
    name); scheduling the same key again replaces the pending timer. With
    ``every`` the timer is periodic: it first fires at ``at``/``after`` (or one
    period from now) and then every period on that grid, until cancelled;
    ``missed`` and ``limit`` say what happens to ticks missed while nothing ran.
    """

    command: Any
    at: datetime | None = None
    after: timedelta | None = None
    key: str = ""
    to: Ref | None = None
    every: timedelta | None = None
    missed: Missed = "once"
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", type(self.command).__name__)
        _check_key(self.key)
        self._check_time()
        if self.missed not in MISSED_POLICIES:
            raise HandlerError(f"missed must be one of {MISSED_POLICIES}, not {self.missed!r}")
        if not isinstance(self.limit, int) or self.limit < 1:
            raise HandlerError("limit must be a positive int")
        if self.to is not None and not isinstance(self.to, Ref):
            raise HandlerError("to must be a Ref")

    def _check_time(self) -> None:
        if self.at is not None and self.after is not None:
            raise HandlerError("Schedule takes at= or after=, not both")
        if self.at is None and self.after is None and self.every is None:
            raise HandlerError("Schedule needs at=, after= or every=")
        if self.at is not None and (
            not isinstance(self.at, datetime) or self.at.utcoffset() is None
        ):
            raise HandlerError("at must be a timezone-aware datetime")
        if self.after is not None and (
            not isinstance(self.after, timedelta) or self.after < timedelta(0)
        ):
            raise HandlerError("after must be a timedelta of zero or more")
        if self.every is not None and (
            not isinstance(self.every, timedelta) or self.every < timedelta(milliseconds=1)
        ):
            raise HandlerError("every must be a timedelta of at least a millisecond")

    def due(self, now: datetime) -> datetime:
        """When the timer first falls due, scheduled at ``now``."""
        if self.at is not None:
            return self.at
        try:
            return now + (self.after if self.after is not None else self.every or timedelta(0))
        except OverflowError:
            wait = self.after or self.every
            raise HandlerError(f"a timer due after {wait} is past 9999") from None


@dataclass(frozen=True, slots=True)
class Cancel:
    """Remove the pending timer ``key`` of this entity (nothing if there is none)."""

    key: str

    def __post_init__(self) -> None:
        _check_key(self.key)


@dataclass(frozen=True, slots=True)
class FiredTimer:
    """The timer that fired the command being handled.

    ``due`` is when it (or the tick) was due; ``missed`` how many ticks of a
    periodic timer were missed before this one (see :data:`Missed`); ``every``
    the period, None for a one-shot timer.
    """

    key: str
    due: datetime
    missed: int = 0
    every: timedelta | None = None


_fired: ContextVar[FiredTimer | None] = ContextVar("pachyderm_fired_timer", default=None)


def current_timer() -> FiredTimer | None:
    """Inside ``handle``: the timer that fired this command, or None for any other."""
    return _fired.get()


@contextmanager
def fired_by(timer: FiredTimer | None) -> Iterator[None]:
    token = _fired.set(timer)
    try:
        yield
    finally:
        _fired.reset(token)
