"""A recorded event as the gateway shows it, in a history page and in an event stream alike."""

from __future__ import annotations

from .. import _codec
from ..store import RecordedEvent
from ._bodies import Event


def event_body(event: RecordedEvent) -> Event:
    return Event(
        version=event.version,
        name=event.name,
        data=_codec.decode(event.data),
        command_id=event.command_id,
        recorded_at=event.recorded_at,
        schema_version=event.schema_version,
    )
