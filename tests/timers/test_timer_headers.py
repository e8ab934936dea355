"""A timer's command for another entity: its headers on the wire, read back on the target,
declared in docs/asyncapi.yaml; malformed ones are invalid input."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from examples import reservation
from pachyderm import FiredTimer, InvalidInputError
from pachyderm._execution import command_effect
from pachyderm._timer_headers import DUE_HEADER, KEY_HEADER, MISSED_HEADER, timer_from_headers
from pachyderm._wire import effect_message, parse_request
from pachyderm.store import OutboxEntry

from ..asyncapi.document import document, mismatches

SEAT = reservation.Seat.ref("7G")
DUE = datetime(2030, 1, 1, 12, tzinfo=UTC)


def forwarded(timer: FiredTimer) -> tuple[str, Any]:
    effect = command_effect(uuid.uuid4(), SEAT, "Lapse", {"customer": "gil"}, timer=timer)
    entry = OutboxEntry(
        effect.effect_id,
        effect.destination,
        effect.payload,
        uuid.uuid4(),
        "c1",
        datetime.now(UTC),
    )
    return effect_message(entry)


@pytest.mark.parametrize(
    "timer",
    [FiredTimer("hold", DUE), FiredTimer("renew", DUE, missed=3, every=timedelta(minutes=5))],
)
def test_the_target_reads_the_timer_that_fired_its_command(timer: FiredTimer) -> None:
    kind, message = forwarded(timer)
    assert kind == "command"
    request = parse_request(reservation.app, message)
    assert request.timer == timer
    assert request.message == reservation.Lapse("gil")
    headers = dict(message.headers or {})
    problems = mismatches(
        document(), "Command", body=message.body, content_type=message.content_type, headers=headers
    )
    assert problems == []


def test_a_command_without_timer_headers_has_no_timer() -> None:
    assert timer_from_headers({}) is None


@pytest.mark.parametrize(
    "headers",
    [
        {KEY_HEADER: 5, DUE_HEADER: DUE.isoformat()},
        {KEY_HEADER: "k"},
        {KEY_HEADER: "k", DUE_HEADER: "yesterday"},
        {KEY_HEADER: "k", DUE_HEADER: "2030-01-01T12:00:00"},  # no offset: which zone?
        {KEY_HEADER: "k", DUE_HEADER: DUE.isoformat(), MISSED_HEADER: -1},
        {KEY_HEADER: "k", DUE_HEADER: DUE.isoformat(), MISSED_HEADER: "3"},
        {KEY_HEADER: "k", DUE_HEADER: DUE.isoformat(), "pachyderm-timer-every-us": 0},
    ],
)
def test_malformed_timer_headers_are_invalid_input(headers: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="bad timer headers"):
        timer_from_headers(headers)
