"""The record of a chaos run: what each caller sent, and what it was told.

Jepsen-style: every request keeps all its attempts (a timed-out attempt is
retried with the same command id), each with when it was sent and its
outcome. The checker compares this record with what the database holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OK = "ok"
REJECTED = "rejected"
INVALID = "invalid"
FAILED = "failed"
UNKNOWN = "unknown"
"""No answer within the caller's timeout (or the publish itself failed): applied or not."""
SENT = "sent"
"""Published without asking for a reply, and confirmed by the broker: it must apply."""
ENDED = "ended"
"""The entity had ended (or was erased): refused, never to apply."""

QUARANTINED = "quarantined"
"""The command used up its attempts (a poison): set aside, not applied."""

REFUSALS = frozenset({REJECTED, INVALID, FAILED, ENDED, QUARANTINED})


@dataclass(slots=True)
class Attempt:
    """One try of a request. Times are seconds since the run started."""

    sent_at: float
    outcome: str = UNKNOWN
    answered_at: float | None = None
    version: int | None = None  # known when the caller reads raw replies
    reply: Any = None
    detail: str = ""  # a rejection's reason, an error's message


@dataclass(slots=True)
class Request:
    """A command a caller sent to one entity, under one command id, however often."""

    command_id: str
    entity_type: str
    entity_id: str
    command: str
    payload: dict[str, Any]
    caller: str
    attempts: list[Attempt] = field(default_factory=list)

    def outcomes(self) -> set[str]:
        return {attempt.outcome for attempt in self.attempts}

    @property
    def acknowledged(self) -> bool:
        """Some attempt was told the command applied."""
        return OK in self.outcomes()

    @property
    def confirmed(self) -> bool:
        """Published without a reply and confirmed: it must apply or be dead-lettered."""
        return SENT in self.outcomes()

    @property
    def refused(self) -> bool:
        """Every attempt was answered, never with success: it must not have applied."""
        outcomes = self.outcomes()
        return bool(outcomes) and outcomes <= REFUSALS

    @property
    def answered(self) -> bool:
        """Its last attempt got an answer (the caller did not give up on it)."""
        return bool(self.attempts) and self.attempts[-1].outcome != UNKNOWN


class Record:
    """Every request of a run, and the clock their times are read from."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._started = time.monotonic()
        self._started_at = time.time()

    def now(self) -> float:
        return time.monotonic() - self._started

    def clock(self, at: float) -> str:
        """``at`` (a time of this record's) as the workers' logs show the time (UTC), to
        find what they did then."""
        moment = datetime.fromtimestamp(self._started_at + at, UTC)
        return moment.strftime("%H:%M:%S.%f")[:-3]

    def since(self, moment: datetime) -> float:
        """A wall-clock ``moment`` (a commit's ``recorded_at``) as a time of this record's."""
        return moment.timestamp() - self._started_at

    def add(self, request: Request) -> Request:
        self.requests.append(request)
        return request

    def __iter__(self) -> Iterator[Request]:
        return iter(self.requests)

    def __len__(self) -> int:
        return len(self.requests)

    def unanswered(self) -> list[Request]:
        """Requests whose callers gave up waiting: a liveness failure, not a safety one."""
        return [request for request in self.requests if not request.answered]

    def write(self, path: Path) -> None:
        """One JSON object per request, for looking into a run afterwards."""
        with path.open("w") as out:
            for request in self.requests:
                out.write(json.dumps(asdict(request), default=str) + "\n")
