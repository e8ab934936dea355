"""The relay's messages say which version of the event's type wrote their body."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pachyderm import App, ProjectionContext
from pachyderm.projections._relay import relayed_message

from ..test_upcasting import Account, Deposited

APP = App([Account])


def context(
    name: str = "", data: bytes = b"", schema_version: int | None = None
) -> ProjectionContext:
    return ProjectionContext(
        "account",
        uuid.uuid4(),
        3,
        uuid.uuid4(),
        0,
        7,
        datetime.now(UTC),
        name=name,
        data=data,
        schema_version=schema_version,
    )


def test_a_stored_event_goes_out_with_the_version_it_was_written_with() -> None:
    message = relayed_message(
        APP, Deposited(100), context(name="MoneyIn", data=b"\x80", schema_version=1)
    )
    assert (message.type, message.body) == ("MoneyIn", b"\x80")
    assert message.headers["pachyderm-schema-version"] == 1


def test_an_event_encoded_by_its_class_goes_out_with_the_current_version() -> None:
    message = relayed_message(APP, Deposited(100), context())
    assert (message.type, message.headers["pachyderm-schema-version"]) == ("Deposited", 3)


def test_without_a_known_version_the_header_is_left_out() -> None:
    message = relayed_message(APP, Deposited(100), context(name="Deposited", data=b"\x80"))
    assert "pachyderm-schema-version" not in message.headers
