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


def _reject_extension(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack extension types are not accepted (type {code})")


def decode(data: bytes, content_type: str | None = None, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode a message body; ``content_type`` defaults to msgpack.

    Raises :class:`DecodeError` (or :class:`UnsupportedContentTypeError`) and nothing else.
    """
    kind = _media_type(content_type)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"body must be bytes, got {type(data).__name__}")
    if len(data) > limits.max_bytes:
        raise DecodeError(f"message of {len(data)} bytes exceeds the limit of {limits.max_bytes}")
    value = _decode_json(bytes(data)) if kind in _JSON_ALIASES else _decode_msgpack(data, limits)
    _check_shape(value, limits)
    return value


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return MSGPACK
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in _MSGPACK_ALIASES or kind in _JSON_ALIASES:
        return kind
    raise UnsupportedContentTypeError(
        f"content type {content_type[:80]!r} is not supported; use {MSGPACK} or {JSON}"
    )


def _decode_msgpack(data: bytes | bytearray | memoryview, limits: Limits) -> Any:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            ext_hook=_reject_extension,
            timestamp=0,
            max_str_len=limits.max_bytes,
            max_bin_len=limits.max_bytes,
            max_array_len=limits.max_items,
            max_map_len=limits.max_items,
            max_ext_len=0,
        )
    except DecodeError:
        raise
    except msgpack.ExtraData:
        raise DecodeError("trailing bytes after the msgpack value") from None
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as error:
        raise DecodeError(f"malformed msgpack: {error or type(error).__name__}") from None


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
    """Enforce nesting depth, total item count, string keys and finite floats."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    items = 0
    while pending:
        node, depth = pending.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise DecodeError("NaN and infinite numbers are not accepted")
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
