"""The top-level keys a message class declares, for reading a message strictly.

A key is declared if it is a field's name or one of its aliases, or the name of
a computed field (which the message's own dump contains, so a message must
always read back what it wrote). A class that sets pydantic's ``extra`` itself
decides on undeclared keys: pydantic applies its choice, and strict reading
leaves the class alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Annotated, Any, get_args, get_origin

import pydantic
from pydantic.fields import FieldInfo


def chooses_extra(cls: type[Any]) -> bool:
    """Whether ``cls`` sets pydantic's ``extra``: in ``model_config``, or in
    ``__pydantic_config__`` (a dataclass's)."""
    if issubclass(cls, pydantic.BaseModel):
        return "extra" in cls.model_config
    return "extra" in (getattr(cls, "__pydantic_config__", None) or {})


def declared_keys(cls: type[Any]) -> frozenset[str]:
    """The keys of plain data that ``cls`` (a pydantic model or a dataclass) reads."""
    keys: set[str] = set()
    for name, info in _fields(cls):
        keys.add(name)
        keys.update(_aliases(info))
    decorators = getattr(cls, "__pydantic_decorators__", None)
    keys.update(getattr(decorators, "computed_fields", {}))
    return frozenset(keys)


def _fields(cls: type[Any]) -> Iterator[tuple[str, FieldInfo | None]]:
    if issubclass(cls, pydantic.BaseModel):
        yield from cls.model_fields.items()
        return
    # A pydantic dataclass knows its fields; a plain one may hold them in its fields.
    known: dict[str, FieldInfo] = getattr(cls, "__pydantic_fields__", None) or {}
    for field in dataclasses.fields(cls):
        yield field.name, known.get(field.name) or _field_info(field)


def _field_info(field: dataclasses.Field[Any]) -> FieldInfo | None:
    """``x: int = Field(alias=...)`` or ``x: Annotated[int, Field(alias=...)]``."""
    if isinstance(field.default, FieldInfo):
        return field.default
    if get_origin(field.type) is Annotated:
        return next((m for m in get_args(field.type) if isinstance(m, FieldInfo)), None)
    return None


def _aliases(info: FieldInfo | None) -> Iterator[str]:
    if info is None:
        return
    if isinstance(info.alias, str):
        yield info.alias
    alias = info.validation_alias
    choices = alias.choices if isinstance(alias, pydantic.AliasChoices) else [alias]
    for choice in choices:
        if isinstance(choice, str):
            yield choice
        elif isinstance(choice, pydantic.AliasPath) and isinstance(choice.path[0], str):
            yield choice.path[0]
