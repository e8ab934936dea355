"""The gateway's answers to overload and unavailability say when to try again."""

from __future__ import annotations

import pytest

from pachyderm import (
    OverloadedError,
    PachydermError,
    StoreUnavailableError,
    TransportUnavailableError,
)
from pachyderm.gateway._problems import problem_from


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (OverloadedError("full"), 429, "1"),
        (OverloadedError("busy", cause="in-flight", retry_after=2.5), 429, "3"),
        (OverloadedError("soon", retry_after=0.01), 429, "1"),  # whole seconds, at least 1
        (TransportUnavailableError("away"), 503, "5"),
        (StoreUnavailableError("away"), 503, "5"),
    ],
)
def test_overload_and_unavailability_carry_retry_after(
    error: PachydermError, status: int, retry_after: str
) -> None:
    problem = problem_from(error)
    assert problem.status_code == status
    assert problem.response().headers["Retry-After"] == retry_after


def test_an_overloaded_problem_says_what_was_full_and_that_nothing_was_sent() -> None:
    queue = problem_from(OverloadedError("the queue", cause="queue-full")).document
    client = problem_from(OverloadedError("the client", cause="in-flight")).document
    assert queue.type == client.type == "urn:pachyderm:problem:overloaded"
    assert "queue for this entity is full" in queue.detail
    assert "calls in flight" in client.detail
    assert "nothing was sent" in queue.detail
