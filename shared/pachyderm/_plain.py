"""Plain data (what the codec carries) from the richer values entities use."""

from __future__ import annotations

from typing import Any

import pydantic_core

from ._errors import HandlerError


def plain(value: Any) -> Any:
    """Plain data for the codec from dataclasses, models, UUIDs, datetimes and the like."""
    try:
        return pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError as error:
        raise HandlerError(f"cannot serialise {type(value).__name__}: {error}") from error
