"""A command's sent time, and the refusal of commands older than the command window."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from examples import counter
from pachyderm import (
    App,
    CommandExpiredError,
    InvalidInputError,
    InvalidSentTimeError,
    PachydermError,
)
from pachyderm import _codec as codec
from pachyderm import _expiry as expiry
from pachyderm._embedded import EmbeddedFleet, embedded
from pachyderm._expiry import SENT_AT_HEADER, CommandWindow, stamped
from pachyderm._wire import COMMAND, effect_message, error_reply, named_message, read_reply
from pachyderm.gateway._problems import problem_from
from pachyderm.store import OutboxEntry
from pachyderm.transport import Message
from pachyderm.worker import WorkerOptions

NOW = 1_800_000_000.0  # seconds
NOW_UTC = datetime.fromtimestamp(NOW, UTC)
WINDOW = CommandWindow(retention=1000.0, margin=100.0)


def sent(seconds_ago: float) -> dict[str, object]:
    return {SENT_AT_HEADER: round((NOW - seconds_ago) * 1000)}


def test_a_command_without_a_sent_time_is_accepted() -> None:
    WINDOW.check({}, NOW)


@pytest.mark.parametrize("age", [0.0, 1.0, 899.0, 900.0, -99.0])
def test_a_command_sent_within_the_window_less_the_margin_is_accepted(age: float) -> None:
    WINDOW.check(sent(age), NOW)


@pytest.mark.parametrize("age", [900.5, 999.0, 1000.0, 86400.0 * 30])
def test_an_older_command_expires(age: float) -> None:
    with pytest.raises(CommandExpiredError, match="not applied") as raised:
        WINDOW.check(sent(age), NOW)
    assert not isinstance(raised.value, InvalidInputError)
    assert isinstance(raised.value, PachydermError)


def test_a_sent_time_further_ahead_than_the_margin_is_invalid() -> None:
    with pytest.raises(InvalidSentTimeError, match="ahead of this worker's clock"):
        WINDOW.check(sent(-101.0), NOW)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("1800000000000", "must be an integer"),
        (True, "must be an integer"),
        (None, "must be an integer"),
        (1_800_000_000, r"\(seconds\?\)"),
        (-5, "milliseconds since the Unix epoch"),
        (math.nan, "milliseconds since the Unix epoch"),
        (math.inf, "milliseconds since the Unix epoch"),
        (1_799_999_999_999.5, "milliseconds since the Unix epoch"),
    ],
)
def test_a_malformed_sent_time_is_invalid(value: object, problem: str) -> None:
    with pytest.raises(InvalidSentTimeError, match=problem):
        WINDOW.check({SENT_AT_HEADER: value}, NOW)


def test_a_whole_float_of_milliseconds_is_a_sent_time() -> None:
    WINDOW.check({SENT_AT_HEADER: float(NOW * 1000)}, NOW)


@pytest.mark.parametrize(("retention", "margin"), [(10.0, 10.0), (10.0, 11.0), (10.0, -1.0)])
def test_the_margin_must_fit_inside_the_retention(retention: float, margin: float) -> None:
    with pytest.raises(ValueError, match="margin"):
        CommandWindow(retention, margin)


def test_a_message_is_stamped_once() -> None:
    message = Message(body=b"", routing_key="k")
    before = expiry.now_ms()
    first = stamped(message)
    assert before <= first.headers[SENT_AT_HEADER] <= expiry.now_ms()
    kept = Message(body=b"", routing_key="k", headers={SENT_AT_HEADER: 1})
    assert stamped(kept).headers[SENT_AT_HEADER] == 1  # a retry keeps its first time


def test_expired_is_a_reply_status_of_its_own_and_raises_its_error() -> None:
    request = named_message(counter.Counter.ref("c"), "Increment", {})
    reply = error_reply(request, CommandExpiredError("sent long ago"))
    assert reply.headers["pachyderm-status"] == "expired"
    assert codec.decode(reply.body, reply.content_type) == {
        "status": "expired",
        "error": "CommandExpiredError",
        "message": "sent long ago",
    }
    with pytest.raises(CommandExpiredError, match="sent long ago"):
        read_reply(reply)


def test_a_bad_sent_time_comes_back_to_the_client_as_its_own_error() -> None:
    request = named_message(counter.Counter.ref("c"), "Increment", {})
    reply = error_reply(request, InvalidSentTimeError("clock ahead"))
    assert codec.decode(reply.body, reply.content_type)["status"] == "invalid"
    with pytest.raises(InvalidSentTimeError, match="clock ahead"):
        read_reply(reply)


# -- through the embedded fleet's worker --------------------------------------------


@pytest.fixture
async def fleet() -> AsyncIterator[EmbeddedFleet]:
    options = WorkerOptions(window=CommandWindow(retention=60.0, margin=5.0))
    async with embedded(App([counter.Counter]), options=options) as running:
        yield running


async def test_the_worker_refuses_an_old_command_before_deciding(
    fleet: EmbeddedFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = counter.Counter.ref("expiring")
    assert await fleet.client.call(ref, counter.Increment(amount=1)) == {"count": 1}
    # The client's clock runs 56 s behind: its commands look 56 s old to the worker.
    monkeypatch.setattr(expiry, "now_ms", lambda: time.time_ns() // 1_000_000 - 56_000)
    with pytest.raises(CommandExpiredError, match="accepted for 55s"):
        await fleet.client.call(ref, counter.Increment(amount=10))
    # Queries apply nothing: they are answered whatever their age.
    assert await fleet.client.query(ref) == {"count": 1}
    monkeypatch.setattr(expiry, "now_ms", lambda: time.time_ns() // 1_000_000 - 50_000)
    assert await fleet.client.call(ref, counter.Increment(amount=2)) == {"count": 3}


async def test_a_caller_s_sent_at_counts_the_window_from_the_first_send(
    fleet: EmbeddedFleet,
) -> None:
    ref = counter.Counter.ref("retried")
    now = datetime.now(UTC)
    # A retry of a command first sent 56 s ago, with the first send's time: expired.
    with pytest.raises(CommandExpiredError, match="accepted for 55s"):
        await fleet.client.call(
            ref, counter.Increment(amount=10), command_id="c1", sent_at=now - timedelta(seconds=56)
        )
    with pytest.raises(CommandExpiredError):
        await fleet.client.call_named(
            ref, "Increment", {"amount": 10}, sent_at=now - timedelta(seconds=56)
        )
    # Within the window it applies, once, and a retry with the same id gets its reply.
    first = now - timedelta(seconds=40)
    for _ in range(2):
        answer = await fleet.client.request(
            ref, "Increment", {"amount": 2}, command_id="c2", sent_at=first
        )
        assert answer == (1, {"count": 2})
    sent = await fleet.client.send(ref, counter.Increment(amount=1), sent_at=first)
    assert sent


def test_sent_at_is_carried_in_milliseconds_and_must_be_aware() -> None:
    message = Message(body=b"", routing_key="k")
    assert expiry.with_sent_at(message, None) is message
    carried = expiry.with_sent_at(message, NOW_UTC)
    assert carried.headers[SENT_AT_HEADER] == NOW * 1000
    assert stamped(carried).headers[SENT_AT_HEADER] == NOW * 1000  # kept when published
    with pytest.raises(ValueError, match="timezone-aware"):
        expiry.with_sent_at(message, datetime(2026, 1, 1))  # naive: the point


def test_the_gateway_answers_an_expired_command_as_its_own_failure() -> None:
    problem = problem_from(CommandExpiredError("sent long ago"))
    assert problem.status_code == 500
    assert "nothing was applied" in problem.detail


def test_a_command_one_entity_sends_another_is_stamped_when_the_outbox_publishes_it() -> None:
    payload = codec.encode(
        {
            "entity_type": "counter",
            "entity_id": str(uuid.uuid4()),
            "command": "Increment",
            "data": {},
        }
    )
    entry = OutboxEntry(uuid.uuid4(), "command.counter", payload, uuid.uuid4(), "c1", NOW_UTC)
    before = expiry.now_ms()
    kind, message = effect_message(entry)
    assert kind == COMMAND
    assert before <= message.headers[SENT_AT_HEADER] <= expiry.now_ms()
    # An effect for a handler is no command: no expiry applies to it.
    handler = OutboxEntry(uuid.uuid4(), "effect.mailer", b"\x80", uuid.uuid4(), "c1", NOW_UTC)
    assert SENT_AT_HEADER not in effect_message(handler)[1].headers
