"""Reply bundles: the replies of one batch to one caller, as one AMQP message.

Under load a worker's batch holds several commands of the same caller, and each
reply was a message of its own: routed, queued and delivered by the broker, read
and dispatched by the caller, one at a time. A caller that says it reads bundles
gets them together instead. It says so by its address: a reply queue named
``<namespace>.replies.bundled.<anything>`` (the Python client's always is; inside
the ``<namespace>.replies.*`` names that the broker's permissions give callers).

A bundle is a message with content type :data:`BUNDLE` whose body is a msgpack
array of replies, each ``[correlation_id, content_type, headers, body]`` (``body``
binary, the reply's own encoding). Invariants: a bundle's replies come out as the
messages they would have been alone, in the order they were sent; only a reply
that has no other property travels in a bundle (any other goes alone, in its
place in the order); one reply is never bundled, and no bundle's body grows past
:data:`MAX_BUNDLE_BYTES` (a larger reply goes alone), so a reader's size limit
for one message holds for bundles too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .. import _codec
from .._errors import DecodeError
from ._message import Message

BUNDLE = "application/vnd.pachyderm.replies+msgpack"
# The replies' bodies in one bundle, at most: well under a reader's 1 MiB per message.
MAX_BUNDLE_BYTES = 256 * 1024


def bundling_address(namespace: str, suffix: str) -> str:
    """A reply address of ``namespace`` whose listener reads bundles."""
    return f"{namespace}.replies.bundled.{suffix}"


def bundled(namespace: str, messages: Sequence[Message]) -> list[Message]:
    """``messages`` with the replies to each bundling address of ``namespace`` put
    together where they can be (see the module's invariants); the others as they are."""
    mark = bundling_address(namespace, "")
    out: list[Message] = []
    open_bundles: dict[str, _Open] = {}
    for message in messages:
        address = message.routing_key
        if not address.startswith(mark):
            out.append(message)
        elif not _bundleable(message):
            if (group := open_bundles.pop(address, None)) is not None:
                out += _closed(group.replies)
            out.append(message)
        else:
            group = open_bundles.setdefault(address, _Open())
            if group.size + len(message.body) > MAX_BUNDLE_BYTES:
                out += _closed(group.replies)
                group = open_bundles[address] = _Open()
            group.replies.append(message)
            group.size += len(message.body)
    for group in open_bundles.values():
        out += _closed(group.replies)
    return out


@dataclass(slots=True)
class _Open:
    """A bundle being put together: its replies and the sum of their bodies' sizes."""

    replies: list[Message] = field(default_factory=list)
    size: int = 0


def _bundleable(message: Message) -> bool:
    return (
        message.message_id is None
        and message.reply_to is None
        and message.type is None
        and len(message.body) <= MAX_BUNDLE_BYTES
    )


def _closed(group: list[Message]) -> list[Message]:
    if len(group) < 2:
        return group
    entries = [[m.correlation_id, m.content_type, dict(m.headers), m.body] for m in group]
    return [Message(_codec.encode(entries), routing_key=group[0].routing_key, content_type=BUNDLE)]


def unbundled(message: Message) -> Iterator[Message]:
    """The replies in ``message``: itself unless it is a bundle. A bundle that is not one
    (a hostile or broken publisher's) raises :class:`DecodeError` before any reply of it
    comes out: its callers' calls time out, as for any reply that never came."""
    if message.content_type != BUNDLE:
        return iter((message,))
    entries = _codec.decode(message.body)
    if not isinstance(entries, list) or not all(map(_is_entry, entries)):
        raise DecodeError(
            "a reply bundle must be an array of [correlation_id, content_type, headers, body]"
        )
    return (_reply(message.routing_key, *entry) for entry in entries)


def _is_entry(entry: Any) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) == 4
        and isinstance(entry[0], str | None)
        and isinstance(entry[1], str | None)
        and isinstance(entry[2], dict)
        and isinstance(entry[3], bytes)
    )


def _reply(
    address: str, correlation_id: str | None, content_type: str | None, headers: Any, body: bytes
) -> Message:
    return Message(
        body,
        routing_key=address,
        correlation_id=correlation_id,
        content_type=content_type,
        headers=MappingProxyType(headers),
    )
