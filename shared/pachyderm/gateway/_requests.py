"""What a request carries: the entity it addresses, its command id, its JSON body, a page."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from .. import _codec
from .._errors import DefinitionError, InvalidEntityIdError, UnknownNameError
from .._reference import Ref, check_type_name
from ._bodies import Fields
from ._problems import Problem

KEY_PREFIX = "key:"
IDEMPOTENCY_KEY = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 200
DEFAULT_PAGE, MAX_PAGE = 100, 1000
MAX_VERSION = 10**18 - 1  # the most digits _number reads


def entity_ref(request: Request) -> Ref:
    """The entity of the path: ``{type}`` and ``{id}``, a UUID or ``key:<natural key>``."""
    type_name, text = request.path_params["type"], request.path_params["id"]
    try:
        check_type_name(type_name)
    except DefinitionError:
        # No type could ever be registered under this name.
        raise UnknownNameError(f"unknown entity type {type_name!r}") from None
    if not text.startswith(KEY_PREFIX):
        return Ref.parse(type_name, text)
    key = text.removeprefix(KEY_PREFIX)
    if not key:
        raise InvalidEntityIdError("a natural key after 'key:' must not be empty")
    return Ref.from_key(type_name, key)


def command_id(request: Request) -> str:
    """The ``Idempotency-Key`` header (quoted or not) as the command id, else a new UUID.

    A key is 1 to 200 printable ASCII characters; anything else is a 400.
    """
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is None:
        return str(uuid.uuid4())
    if len(key) >= 2 and key[0] == key[-1] == '"':  # RFC 8941 string, as the IETF draft has it
        key = key[1:-1]
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not all(" " <= c <= "~" for c in key):
        raise _invalid(
            f"{IDEMPOTENCY_KEY} must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        )
    return key


async def json_object(request: Request, max_body: int) -> dict[str, Any]:
    """The body, a JSON object (:class:`Fields`) of at most ``max_body`` bytes.

    Refuses an oversized body by its ``Content-Length`` before reading it,
    and stops reading one without (chunked) as soon as it grows too large.
    """
    if _media_type(request) != _codec.JSON:
        raise Problem(415, f"send the fields as a JSON object, with Content-Type: {_codec.JSON}")
    too_large = Problem(413, f"the body must not exceed {max_body} bytes")
    if _number(request.headers.get("content-length", "")) > max_body:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise too_large
    data = _codec.decode(bytes(body), _codec.JSON, _codec.Limits(max_bytes=max_body))
    try:
        return Fields.model_validate(data).root
    except ValidationError:
        raise _invalid("the body must be a JSON object of the fields") from None


def page(request: Request) -> tuple[int, int]:
    """``(from, limit)`` from the query string: version 1 and up, 1 to 1000 events."""
    first = _integer(request, "from", 1, minimum=1, maximum=MAX_VERSION)
    limit = _integer(request, "limit", DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE)
    return first, limit


def _integer(request: Request, name: str, default: int, *, minimum: int, maximum: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not minimum <= _number(text) <= maximum:
        raise _invalid(f"{name} must be an integer from {minimum} to {maximum}")
    return int(text)


def _number(text: str) -> int:
    """A non-negative decimal integer of up to 18 digits, else -1."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else -1


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _invalid(detail: str) -> Problem:
    return Problem(400, detail, kind="invalid-input")
