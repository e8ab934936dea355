"""Typed messages (commands, events) registered under stable names.

A message type is a dataclass or a pydantic model. On the wire and at rest a
message is its registered name plus its fields as plain data, so a renamed
Python class keeps reading old events as long as its registered name stays.

A registry reads either strictly (commands and queries: a key the type does not
declare is an error naming it, so a misspelled field is never replaced by its
default) or tolerantly (events and states: unknown keys are ignored, so a
publisher may add fields first). A type that sets pydantic's ``extra`` itself is
read as it says, whatever its registry. Strictness is about the top level:
nested models keep their own configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import pydantic

from ._declared_fields import chooses_extra, declared_keys
from ._errors import (
    DecodeError,
    DefinitionError,
    DuplicateNameError,
    FieldProblem,
    InvalidMessageError,
    UnknownNameError,
)
from ._upcasting import Evolution

MessageTypesSpec = Iterable[type[Any]] | Mapping[str, type[Any]]
Extra = Literal["ignore", "forbid"]


def field_problems(error: pydantic.ValidationError) -> list[FieldProblem]:
    """Turn pydantic's report into field problems with dotted locations."""
    return [
        FieldProblem(".".join(str(part) for part in detail["loc"]), detail["msg"])
        for detail in error.errors(include_url=False)
    ]


def _check_message_class(kind: str, name: str, cls: Any) -> None:
    is_model = isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)
    if not (is_model or (isinstance(cls, type) and dataclasses.is_dataclass(cls))):
        raise DefinitionError(
            f"{kind} {name!r}: {cls!r} is neither a dataclass nor a pydantic model"
        )
    if not name or not isinstance(name, str) or len(name) > 200:
        raise DefinitionError(f"{kind} name {name!r} must be a non-empty string of at most 200")


class MessageTypes:
    """A registry of message types of one kind ("command", "event") for one entity type.

    Names and classes map one to one: registering a name twice, or a class under
    two names, raises :class:`DuplicateNameError`. ``extra`` is what :meth:`load`
    does with keys a type does not declare, unless the type sets pydantic's
    ``extra`` itself: "ignore" them, or "forbid" them (each is a problem).
    """

    def __init__(self, kind: str, spec: MessageTypesSpec = (), *, extra: Extra = "ignore") -> None:
        self.kind = kind
        self.extra = extra
        self._by_name: dict[str, pydantic.TypeAdapter[Any]] = {}
        # The keys each strictly read type declares; tolerantly read ones are absent.
        self._declared: dict[str, frozenset[str]] = {}
        self._name_by_class: dict[type[Any], str] = {}
        self.evolution = Evolution(kind)
        pairs = spec.items() if isinstance(spec, Mapping) else ((c.__name__, c) for c in spec)
        for name, cls in pairs:
            self.register(name, cls)

    def register(self, name: str, cls: type[Any]) -> None:
        """Register ``cls`` under ``name``."""
        _check_message_class(self.kind, name, cls)
        if name in self._by_name:
            raise DuplicateNameError(f"{self.kind} name {name!r} is already registered")
        if cls in self._name_by_class:
            raise DuplicateNameError(
                f"{self.kind} {cls.__qualname__} is already registered as "
                f"{self._name_by_class[cls]!r}"
            )
        self.evolution.register(name, cls)
        self._by_name[name] = pydantic.TypeAdapter(cls)
        self._name_by_class[cls] = name
        if self.extra == "forbid" and not chooses_extra(cls):
            self._declared[name] = declared_keys(cls)

    @property
    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._by_name)

    def types(self) -> list[tuple[str, type[Any]]]:
        """``(registered name, class)`` pairs, in registration order."""
        return [(name, cls) for cls, name in self._name_by_class.items()]

    def forbids_unknown(self, name: str) -> bool:
        """Whether :meth:`load` refuses keys that ``name``'s type does not declare because
        the registry reads strictly (a type that sets pydantic's ``extra`` says so itself)."""
        return name in self._declared

    def __contains__(self, message: object) -> bool:
        return type(message) in self._name_by_class

    def name_of(self, message: object) -> str:
        """The registered name of ``message``'s type; :class:`UnknownNameError` if unregistered."""
        try:
            return self._name_by_class[type(message)]
        except KeyError:
            raise UnknownNameError(
                f"{type(message).__qualname__} is not a registered {self.kind}; "
                f"registered: {', '.join(self.names) or 'none'}"
            ) from None

    def dump(self, message: object) -> tuple[str, Any]:
        """The message as ``(name, plain data)`` ready for the codec."""
        name = self.name_of(message)
        return name, self._by_name[name].dump_python(message, mode="json")

    def load(self, name: str, data: Any) -> Any:
        """Build the message registered as ``name`` from plain data.

        Raises :class:`UnknownNameError` or :class:`InvalidMessageError` (which names
        each field: invalid, missing and, read strictly, unknown).
        """
        adapter = self._by_name.get(name) if isinstance(name, str) else None
        if adapter is None:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names) or 'none'}"
            )
        problems = self._unknown_fields(name, data)
        try:
            message = adapter.validate_python(data)
        except pydantic.ValidationError as error:
            raise InvalidMessageError(name, [*field_problems(error), *problems]) from None
        if problems:
            raise InvalidMessageError(name, problems)
        return message

    def schema_version(self, name: str) -> int:
        """The current version of the type registered as ``name`` (1 if it declares none)."""
        return self.evolution.version_of(name)

    def load_stored(self, name: str, data: Any, schema_version: int = 1) -> list[Any]:
        """The messages the current types read from ``data`` stored as ``name`` at
        ``schema_version``: upcast (old names, versions, splits, drops), then loaded.

        Raises :class:`~pachyderm.NewerSchemaError` for an event newer than this code
        (an unknown name, or a version above its type's), besides :meth:`load`'s errors.
        """
        if self.evolution.trivial and self.evolution.current.get(name) == schema_version:
            return [self.load(name, data)]  # the common case: nothing to upcast
        return [
            self.load(current, upcast)
            for current, upcast in self.evolution.upcast(name, schema_version, data)
        ]

    def load_one(self, name: str, data: Any, schema_version: int = 1) -> Any:
        """The one message ``data`` stored as ``name`` at ``schema_version`` reads as;
        :class:`~pachyderm.DecodeError` if its upcasters split or drop it."""
        messages = self.load_stored(name, data, schema_version)
        if len(messages) != 1:
            raise DecodeError(
                f"{self.kind} {name!r} at version {schema_version} upcasts to "
                f"{len(messages)} messages, not one"
            )
        return messages[0]

    def _unknown_fields(self, name: str, data: Any) -> list[FieldProblem]:
        declared = self._declared.get(name)
        if declared is None or not isinstance(data, Mapping):
            return []  # read tolerantly, or not fields at all (validation says so)
        known = ", ".join(sorted(declared)) or "none"
        return [
            FieldProblem(str(key), f"Unknown field; the fields of {name} are: {known}")
            for key in data
            if key not in declared
        ]
