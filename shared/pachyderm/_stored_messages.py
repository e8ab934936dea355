"""Commands kept in the database whole (quarantined or parked), to run later as received.

A stored command is the msgpack map of its AMQP message: body, routing key,
ids, reply address, content type, type and the headers whose values are plain
(text, numbers, booleans, bytes); anything else a broker may add is not part of
the wire contract and is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._codec import decode_stored, encode
from ._errors import DecodeError
from .transport import Message

_PLAIN = (str, int, float, bool, bytes)
_TEXT_FIELDS = ("routing_key", "message_id", "correlation_id", "reply_to", "content_type", "type")


def _plain(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in headers.items() if isinstance(value, _PLAIN)}


def encode_message(message: Message) -> bytes:
    """``message`` as stored."""
    fields: dict[str, Any] = {name: getattr(message, name) for name in _TEXT_FIELDS}
    return encode({**fields, "body": message.body, "headers": _plain(message.headers)})


def decode_message(data: bytes) -> Message:
    """The message :func:`encode_message` stored; :class:`DecodeError` for a damaged row."""
    fields = decode_stored(data)
    if not isinstance(fields, dict) or not isinstance(fields.get("body"), bytes):
        raise DecodeError("a stored command is a map with its body as bytes")
    headers = fields.get("headers")
    return Message(
        body=fields["body"],
        headers=headers if isinstance(headers, dict) else {},
        **{name: _text(fields.get(name)) for name in _TEXT_FIELDS},
    )


def _text(value: object) -> Any:
    return value if isinstance(value, str) else None
