"""Errors as RFC 9457 problem documents (``application/problem+json``).

Every error the gateway answers is a :class:`Problem`: routing's own (404,
405), the gateway's checks (auth, body, parameters) and, through
:func:`problem_from`, the errors of the call path. Its document is a model
of ``_bodies`` (the one of its kind), so it has the members the OpenAPI
document says. A problem's ``detail`` never carries a traceback, a URL or an
entity's internal error text: those go to the log.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .._errors import (
    CallTimeoutError,
    CommandExpiredError,
    CommandQuarantinedError,
    EntityEndedError,
    EntityTypeMismatchError,
    HandlerError,
    InvalidInputError,
    InvalidMessageError,
    PachydermError,
    RejectedError,
    StoreUnavailableError,
    TransportError,
    UnknownNameError,
)
from .._overload import IN_FLIGHT, QUEUE_FULL, FleetUnavailableError, OverloadedError
from . import _bodies as bodies
from ._bodies import TYPE_PREFIX

log = logging.getLogger("pachyderm.gateway")

# Pachyderm's own problem types: the part after TYPE_PREFIX, and the title
# every occurrence of the type shares (RFC 9457, section 3.1.3). Problems of
# plain HTTP meaning (401, 404 of a route, 405, 413, ...) are "about:blank".
KINDS: Mapping[str, str] = {
    "invalid-input": "Invalid input",
    "unknown-name": "No such entity type or command",
    "invalid-message": "Invalid command fields",
    "rejected": "Rejected by the entity",
    "entity-failed": "The entity failed",
    "timeout": "No reply in time",
    "unavailable": "Temporarily unavailable",
    "overloaded": "Overloaded",
    "ended": "The entity has ended",
    "erased": "The entity was erased",
    "quarantined": "The command is quarantined",
}
# Seconds a caller is asked to wait (Retry-After) while the broker or the store is away:
# a reconnect takes a few.
UNAVAILABLE_RETRY_AFTER = 5
# What a 429 says was full, by OverloadedError.cause.
_OVERLOADED = {
    QUEUE_FULL: "the fleet's queue for this entity is full",
    IN_FLIGHT: "this gateway has as many calls in flight as it takes",
}
# The kinds whose documents have members of their own; the others' are bodies.Problem.
BODIES: Mapping[str, type[bodies.Problem]] = {
    "invalid-message": bodies.InvalidFieldsProblem,
    "rejected": bodies.RejectionProblem,
}


class Problem(HTTPException):
    """An HTTP error answered as a problem document.

    ``kind`` is one of :data:`KINDS` (its type URI is ``urn:pachyderm:problem:<kind>``),
    or ``None`` for a problem that means no more than its HTTP status.
    ``extensions`` become members of the document next to ``detail``: those
    its kind's body (:data:`BODIES`) declares, else a ``ValidationError``
    here, where the problem is made, not when it is answered.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        super().__init__(status, detail, dict(headers or {}))
        self.kind = kind
        if kind is None:
            uri, title = "about:blank", HTTPStatus(status).phrase
        else:
            uri, title = TYPE_PREFIX + kind, KINDS[kind]
        body = BODIES.get(kind or "", bodies.Problem)
        self.document = body(type=uri, title=title, status=status, detail=detail, **extensions)

    def response(self, headers: Mapping[str, str] | None = None) -> Response:
        """The problem as a response, with its own headers and ``headers``."""
        return self.document.response(self.status_code, {**(self.headers or {}), **(headers or {})})


def problem_from(error: PachydermError) -> Problem:
    """The problem that answers ``error``, raised on the call path."""
    if isinstance(error, InvalidMessageError):
        problems = [
            bodies.FieldProblem(location=p.location, problem=p.problem) for p in error.problems
        ]
        return Problem(422, str(error), kind="invalid-message", problems=problems)
    if isinstance(error, UnknownNameError | EntityTypeMismatchError):
        # An id taken by another type names no entity of the requested type.
        return Problem(404, str(error), kind="unknown-name")
    if isinstance(error, InvalidInputError):
        return Problem(400, str(error), kind="invalid-input")
    if isinstance(error, RejectedError):
        return Problem(
            409,
            f"the entity rejected the command: {error.reason}",
            kind="rejected",
            reason=error.reason,
            rejection_detail=error.detail,
        )
    if isinstance(error, EntityEndedError):
        # Gone for good, not a failure: nothing was applied, and never will be.
        return Problem(410, f"{error}; nothing was applied", kind=error.status)
    if (unanswered := _unanswered(error)) is not None:
        return unanswered
    if isinstance(error, CommandQuarantinedError):
        # Its handler took a worker down each time it ran: the entity's code failed.
        return Problem(
            500,
            f"{error}; nothing was applied (an operator may resume it after a fix)",
            kind="quarantined",
        )
    if isinstance(error, HandlerError):
        return Problem(
            500,
            "the entity's code failed on this command, or it kept conflicting; nothing was written",
            kind="entity-failed",
        )
    if isinstance(error, CommandExpiredError):
        # The gateway stamps each command as it publishes it and waits seconds for the
        # reply: a worker finding it older than the command window means clocks that
        # disagree by days, not the caller's doing.
        return Problem(
            500,
            "the workers refused the command as sent too long ago (their clock and this"
            " gateway's disagree); nothing was applied",
        )
    return Problem(500, "internal error")


def _unanswered(error: PachydermError) -> Problem | None:
    """The problem of a call the fleet could not take or answer now (retry later), if
    ``error`` is one: no reply in time, overloaded, the broker or the store away."""
    if isinstance(error, CallTimeoutError):
        return Problem(
            504,
            f"{error}; it may still apply: retry with the same Idempotency-Key",
            kind="timeout",
        )
    if isinstance(error, OverloadedError):
        # This send was not enqueued: retrying later with the same key applies it once.
        return Problem(
            429,
            f"{_OVERLOADED.get(error.cause, 'overloaded')}: nothing was sent; retry after"
            f" {_seconds(error.retry_after)} s",
            kind="overloaded",
            headers={"Retry-After": _seconds(error.retry_after)},
        )
    if isinstance(error, FleetUnavailableError):
        return _unavailable("no worker serves the fleet now; nothing was sent: retry later")
    if isinstance(error, TransportError):
        return _unavailable("the message broker is unavailable; retry later")
    if isinstance(error, StoreUnavailableError):
        return _unavailable("the event store is unavailable; retry later")
    return None


def _seconds(delay: float) -> str:
    """A Retry-After value: whole seconds (RFC 9110), at least 1."""
    return str(max(1, math.ceil(delay)))


def _unavailable(detail: str) -> Problem:
    return Problem(
        503, detail, kind="unavailable", headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}
    )


async def answer_http_error(request: Request, error: Exception) -> Response:
    """Exception handler: a :class:`Problem`, or Starlette's own HTTP errors (404, 405), as
    problem documents."""
    assert isinstance(error, HTTPException)  # registered for HTTPException only
    if isinstance(error, Problem):
        return error.response()
    return Problem(error.status_code, error.detail, headers=error.headers).response()


async def answer_pachyderm_error(
    request: Request, error: Exception, headers: Mapping[str, str] | None = None
) -> Response:
    """Exception handler: an error of the call path as its problem; server faults logged."""
    assert isinstance(error, PachydermError)  # registered for PachydermError only
    problem = problem_from(error)
    if problem.status_code >= 500:
        # The document says little on purpose; the log says what happened.
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(error).__name__, error)
    return problem.response(headers)


async def answer_unexpected(request: Request, error: Exception) -> Response:
    """Exception handler of last resort: a bare 500 (Starlette logs the traceback)."""
    return Problem(500, "internal error").response()
