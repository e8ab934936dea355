"""The wire and storage format: msgpack, with JSON accepted from other services.

Decoding is where hostile input first meets Pachyderm, so it checks everything
before anything else sees the data: total size, container sizes, nesting depth,
no msgpack extension types, string keys only. Every failure is a
:class:`DecodeError`; nothing else escapes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import msgpack

from ._errors import DecodeError, UnsupportedContentTypeError

MSGPACK = "application/msgpack"
JSON = "application/json"
_MSGPACK_ALIASES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
_JSON_ALIASES = frozenset({JSON})


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what :func:`decode` accepts."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 32
    max_items: int = 100_000


DEFAULT_LIMITS = Limits()


def encode(value: Any) -> bytes:
    """Encode plain data (None, bool, int, float, str, bytes, list, dict) as msgpack."""
    try:
        return msgpack.packb(value, use_bin_type=True, datetime=False)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as error:
        raise DecodeError(f"value cannot be encoded: {error}") from None


def encode_as(value: Any, content_type: str) -> bytes:
    """Encode plain data as msgpack or, for ``application/json``, as JSON."""
    if media_type(content_type) != JSON:
        return encode(value)
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as error:
        raise DecodeError(f"value cannot be encoded as JSON: {error}") from None


def _reject_extension(code: int, data: bytes) -> Any:
    raise DecodeError("msgpack extension types are not accepted")


Body = bytes | bytearray | memoryview

# No container may declare more items than the body has bytes, so what a
# body this small can make msgpack allocate up front stays under a MiB
# (measured); larger bodies are walked first (see _check_msgpack_containers).
_PRESCAN_ABOVE = 1024


def decode(data: Body, content_type: str | None = None, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode a message body; ``content_type`` defaults to msgpack.

    Raises :class:`DecodeError` (or :class:`UnsupportedContentTypeError`) and nothing else.
    """
    kind = media_type(content_type)
    body = _as_bytes(data, limits)
    value = _decode_json(body) if kind in _JSON_ALIASES else _decode_msgpack(body, limits)
    _check_shape(value, limits)
    return value


def decode_stored(data: bytes) -> Any:
    """Decode msgpack that this system encoded and stored itself (a timer's payload).

    Without :func:`decode`'s limits and walks over the value, which guard against
    what a publisher may send, not against the store's own rows (an operator who
    can write those can do anything). Still :class:`DecodeError` for bytes that
    are not msgpack, as a damaged row would be.
    """
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, ext_hook=_reject_extension, timestamp=0
        )
    except DecodeError:
        raise
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as error:
        raise DecodeError(f"malformed msgpack: {str(error) or type(error).__name__}") from None


def _as_bytes(data: Body, limits: Limits) -> bytes:
    """The body as bytes, refused before copying when it is over the size limit."""
    if not isinstance(data, Body):
        raise DecodeError(f"body must be bytes, got {type(data).__name__}")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > limits.max_bytes:
        raise DecodeError(f"message of {size} bytes exceeds the limit of {limits.max_bytes}")
    return data.tobytes() if isinstance(data, memoryview) else bytes(data)


def media_type(content_type: str | None) -> str:
    """The media type a content type names (msgpack when none), checked as supported."""
    if not content_type:
        return MSGPACK
    if not isinstance(content_type, str):
        raise UnsupportedContentTypeError("content type must be text")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in _MSGPACK_ALIASES or kind in _JSON_ALIASES:
        return kind
    raise UnsupportedContentTypeError(
        f"content type {content_type[:80]!r} is not supported; use {MSGPACK} or {JSON}"
    )


def _decode_msgpack(data: bytes, limits: Limits) -> Any:
    # No container can hold more items than the body has bytes; the item and
    # depth limits proper are checked by the walks before and after.
    limits_by_kind = {
        "max_str_len": len(data),
        "max_bin_len": len(data),
        "max_array_len": len(data),
        "max_map_len": len(data) // 2,
        "max_ext_len": len(data),
    }
    try:
        if len(data) > _PRESCAN_ABOVE:
            _check_msgpack_containers(data, limits, limits_by_kind)
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            ext_hook=_reject_extension,
            timestamp=0,
            **limits_by_kind,
        )
    except DecodeError:
        raise
    except msgpack.ExtraData:
        raise DecodeError("trailing bytes after the msgpack value") from None
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as error:
        raise DecodeError(f"malformed msgpack: {str(error) or type(error).__name__}") from None


def _is_extension(marker: int) -> bool:
    return 0xC7 <= marker <= 0xC9 or 0xD4 <= marker <= 0xD8


def _check_msgpack_containers(data: bytes, limits: Limits, limits_by_kind: dict[str, int]) -> None:
    """Walk container headers before decoding, without building anything.

    msgpack allocates a container's declared length up front, so a short
    hostile body of nested huge headers could claim gigabytes before any
    check after decoding ran. Depth and item counts are enforced here first.
    """
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(data), 1), **limits_by_kind)
    unpacker.feed(data)
    remaining = [1]  # items still to read in each open container
    items = 0
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        remaining[-1] -= 1
        position = unpacker.tell()
        marker = data[position] if position < len(data) else None
        if marker is None:
            raise DecodeError("malformed msgpack: the body ends before the value does")
        if 0x90 <= marker <= 0x9F or marker in (0xDC, 0xDD):
            count = unpacker.read_array_header()
            slots = count
        elif 0x80 <= marker <= 0x8F or marker in (0xDE, 0xDF):
            count = unpacker.read_map_header()
            slots = 2 * count
        elif _is_extension(marker):
            raise DecodeError("msgpack extension types are not accepted")
        else:
            unpacker.skip()
            continue
        left = len(data) - unpacker.tell()
        if slots > left:
            raise DecodeError(
                f"malformed msgpack: a container declares {count} items "
                f"but only {left} bytes follow"
            )
        items += count
        if len(remaining) > limits.max_depth:
            raise DecodeError(f"nesting deeper than {limits.max_depth} levels")
        if items > limits.max_items:
            raise DecodeError(f"more than {limits.max_items} items in one message")
        remaining.append(slots)


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"JSON constant {name} is not accepted")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise DecodeError("JSON object has a duplicate key")
    return result


def _decode_json(data: bytes) -> Any:
    try:
        return json.loads(data, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except DecodeError:
        raise
    except (ValueError, RecursionError) as error:
        raise DecodeError(f"malformed JSON: {error}") from None


def _check_shape(value: Any, limits: Limits) -> None:
    """Enforce nesting depth, total item count, string keys, finite floats, no extensions."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    items = 0
    while pending:
        node, depth = pending.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise DecodeError("NaN and infinite numbers are not accepted")
        if isinstance(node, msgpack.Timestamp):  # the one extension msgpack decodes itself
            raise DecodeError("msgpack extension types are not accepted")
        if not isinstance(node, dict | list):
            continue
        if depth > limits.max_depth:
            raise DecodeError(f"nesting deeper than {limits.max_depth} levels")
        items += len(node)
        if items > limits.max_items:
            raise DecodeError(f"more than {limits.max_items} items in one message")
        if isinstance(node, dict):
            for key in node:
                if not isinstance(key, str):
                    raise DecodeError(f"map keys must be strings, got {type(key).__name__}")
            pending.extend((child, depth + 1) for child in node.values())
        else:
            pending.extend((child, depth + 1) for child in node)
