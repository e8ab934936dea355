"""Schema evolution of message types: versions, old names and upcasters.

A message type (an event, a command, an entity's state type) declares, as class
attributes, its current ``schema_version`` (default 1) and ``schema_aliases``, the
names it was registered under before (a rename keeps old histories readable)::

    @dataclass
    class Deposited:
        schema_version: ClassVar[int] = 2
        schema_aliases: ClassVar[tuple[str, ...]] = ("MoneyIn",)
        amount_cents: int

An upcaster is a pure function from the stored data of one name at version ``n``
to version ``n + 1``, registered beside the entity's types (``Entity.upcasters``)::

    @upcaster("Deposited", 1)
    def to_cents(data):
        return {"amount_cents": data["amount"] * 100}

It returns one dict (the same name at ``n + 1``), None (drop the message), or a
list of ``(name, data)`` pairs (split): a pair of the upcaster's own name is at
``n + 1``, a pair of another name at version 1 of that name, unless given as
``(name, data, version)``. What it returns is upcast further until each message
is at its type's current version.

Invariants:

- A stored message only ever moves forward, along the chain of its name, to the
  current version of a registered type; the stored bytes are never rewritten.
- The chains are checked when the entity type is defined (:class:`DefinitionError`):
  each name's upcasters are consecutive, end just below its current version, and
  never reach it; an alias names one type only and is no registered name.
- A stored event whose name nothing here knows, or whose version is above the
  chain's end, was written by newer code: :class:`NewerSchemaError`, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Literal

import pydantic

from ._errors import (
    DecodeError,
    DefinitionError,
    DuplicateNameError,
    HandlerError,
    NewerSchemaError,
    UnknownNameError,
)

UpcastResult = (
    Mapping[str, Any]
    | Sequence[tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], int]]
    | None
)
UpcastFunction = Callable[[dict[str, Any]], UpcastResult]
Kind = Literal["event", "command"]

# An upcast that takes more steps than this is going round in circles.
_MAX_STEPS = 1000


@dataclass(frozen=True, slots=True)
class Upcaster:
    """Turns the stored data of ``target`` at ``from_version`` into ``from_version + 1``.

    ``target`` is a registered message class or a stored name (a type since removed
    or split keeps its name here). ``kind`` says whose name it is when the name is
    neither a registered event nor command ("event" when it is a removed one).
    Made by :func:`upcaster`; listed in ``Entity.upcasters``.
    """

    target: str | type[Any]
    from_version: int
    function: UpcastFunction
    kind: Kind | None = None

    def __post_init__(self) -> None:
        _check_from_version(self.target, self.from_version)

    def __call__(self, data: dict[str, Any]) -> UpcastResult:
        return self.function(data)


def upcaster(
    target: str | type[Any], from_version: int, *, kind: Kind | None = None
) -> Callable[[UpcastFunction], Upcaster]:
    """Decorate a pure function from the stored dict of ``target`` at ``from_version``
    to its next version (one dict; None to drop it; ``(name, data)`` pairs to split)."""

    _check_from_version(target, from_version)

    def wrap(function: UpcastFunction) -> Upcaster:
        return Upcaster(target, from_version, function, kind)

    return wrap


def _check_from_version(target: object, from_version: object) -> None:
    if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
        raise DefinitionError(
            f"an upcaster of {target!r} goes from version 1 or later, not {from_version!r}"
        )


def _is_field(cls: type[Any], attribute: str) -> bool:
    if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
        return attribute in cls.model_fields
    return is_dataclass(cls) and any(f.name == attribute for f in fields(cls))


def schema_version_of(cls: Any) -> int:
    """The version a type declares (``schema_version``, default 1)."""
    if not isinstance(cls, type):
        return 1  # Any, dict[str, int]...: plain data, versioned by the entity
    if _is_field(cls, "schema_version"):
        raise DefinitionError(
            f"{cls.__qualname__}.schema_version is a field; declare the version as "
            "schema_version: ClassVar[int]"
        )
    version = getattr(cls, "schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DefinitionError(
            f"{cls.__qualname__}.schema_version must be an int of 1 or more, not {version!r}"
        )
    return version


def schema_aliases_of(cls: type[Any]) -> tuple[str, ...]:
    """The old names a type declares (``schema_aliases``, default none)."""
    if _is_field(cls, "schema_aliases"):
        raise DefinitionError(
            f"{cls.__qualname__}.schema_aliases is a field; declare the old names as "
            "schema_aliases: ClassVar[tuple[str, ...]]"
        )
    aliases = getattr(cls, "schema_aliases", ())
    if isinstance(aliases, str) or not all(isinstance(a, str) and a for a in aliases):
        raise DefinitionError(
            f"{cls.__qualname__}.schema_aliases must be a tuple of names, not {aliases!r}"
        )
    return tuple(aliases)


class Evolution:
    """The versions, aliases and upcasters of one registry's names (see the module doc).

    ``kind`` is the registry's ("event", "command"). A stored name nothing here
    knows is :class:`NewerSchemaError` for events (a newer worker wrote it) and
    :class:`UnknownNameError` for anything else (bad input).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.current: dict[str, int] = {}
        self.aliases: dict[str, str] = {}
        self._steps: dict[tuple[str, int], Upcaster] = {}

    @property
    def trivial(self) -> bool:
        """Whether every stored name is a registered one at version 1 (nothing to do)."""
        return not self._steps and not self.aliases

    def register(self, name: str, cls: type[Any]) -> None:
        """Record ``name``'s type: its version and old names."""
        if name in self.aliases:
            raise DuplicateNameError(
                f"{self.kind} name {name!r} is an old name of {self.aliases[name]!r}"
            )
        self.current[name] = schema_version_of(cls)
        for alias in schema_aliases_of(cls):
            if alias in self.current:
                raise DuplicateNameError(
                    f"{cls.__qualname__} declares the old name {alias!r}, which is the "
                    f"registered name of a {self.kind}"
                )
            if alias in self.aliases:
                raise DuplicateNameError(
                    f"the old name {alias!r} is declared by both {self.aliases[alias]!r} "
                    f"and {name!r}"
                )
            self.aliases[alias] = name

    def add(self, name: str, step: Upcaster) -> None:
        """Register ``step`` for the stored ``name``."""
        if name in self.aliases:
            raise DefinitionError(
                f"the upcaster of {self.kind} {name!r} names an old name: register it "
                f"for {self.aliases[name]!r}, which reads {name!r}'s history"
            )
        if (name, step.from_version) in self._steps:
            raise DuplicateNameError(
                f"two upcasters of {self.kind} {name!r} from version {step.from_version}"
            )
        self._steps[(name, step.from_version)] = step

    def check(self) -> None:
        """Refuse chains with gaps, or that reach or pass their type's current version."""
        chains: dict[str, list[int]] = {}
        for name, version in self._steps:
            chains.setdefault(name, []).append(version)
        for name, versions in chains.items():
            versions.sort()
            if versions != list(range(versions[0], versions[-1] + 1)):
                raise DefinitionError(
                    f"the upcasters of {self.kind} {name!r} have a gap: from versions "
                    f"{versions} (each version needs its step to the next)"
                )
            current = self.current.get(name)
            if current is not None and versions[-1] != current - 1:
                raise DefinitionError(
                    f"the upcasters of {self.kind} {name!r} end at version "
                    f"{versions[-1] + 1}, but its type is at version {current}"
                    + (
                        " (an upcaster from the current version or later)"
                        if versions[-1] >= current
                        else ""
                    )
                )

    def stored_names(self, names: Iterable[str]) -> frozenset[str]:
        """The stored names whose events may read as one of the registered ``names``:
        each name, every name with upcasters (what an upcaster returns is known only by
        running it), and their old names. A reader that filters stored events by name
        (a projection) filters on these."""
        found = set(names) | {name for name, _ in self._steps}
        return frozenset(found | {alias for alias, name in self.aliases.items() if name in found})

    def version_of(self, name: str) -> int:
        return self.current.get(name, 1)

    def upcast(self, name: str, version: int, data: Any) -> list[tuple[str, Any]]:
        """The messages the current code sees for ``data`` stored as ``name`` at
        ``version``: each a registered name at its current version, with its data."""
        if not isinstance(version, int) or version < 1:
            raise DecodeError(f"{self.kind} {name!r}: schema version {version!r} is not 1 or more")
        found: list[tuple[str, Any]] = []
        self._forward(name, version, data, found, [0])
        return found

    def _forward(
        self, name: str, version: int, data: Any, found: list[tuple[str, Any]], steps: list[int]
    ) -> None:
        name = self.aliases.get(name, name)
        current = self.current.get(name)
        if current == version:
            found.append((name, data))
            return
        step = self._steps.get((name, version))
        if step is None:
            raise self._unreadable(name, version, current)
        steps[0] += 1
        if steps[0] > _MAX_STEPS:
            raise DefinitionError(f"the upcasters of {self.kind} {name!r} go round in circles")
        for next_name, next_version, next_data in self._run(step, name, version, data):
            self._forward(next_name, next_version, next_data, found, steps)

    def _unreadable(self, name: str, version: int, current: int | None) -> Exception:
        chain = sorted(v for n, v in self._steps if n == name)
        newest = current if current is not None else (chain[-1] if chain else None)
        if newest is None:
            if self.kind != "event":
                return UnknownNameError(f"unknown {self.kind} {name!r}")
            return NewerSchemaError(
                f"{self.kind} {name!r} (version {version}) is unknown to this code: newer "
                "code wrote it (or its type was removed or renamed without an upcaster "
                "or alias)",
                name=name,
                schema_version=version,
            )
        if version > newest:
            return NewerSchemaError(
                f"{self.kind} {name!r} is at version {version}, newer than this code's "
                f"{newest}: newer code wrote it",
                name=name,
                schema_version=version,
            )
        return DecodeError(
            f"{self.kind} {name!r} at version {version} cannot be read: no upcaster from it "
            f"(this code reads {name!r} from version {chain[0] if chain else newest})"
        )

    def _run(
        self, step: Upcaster, name: str, version: int, data: Any
    ) -> list[tuple[str, int, Any]]:
        """Call the user's upcaster; its result as (name, version, data) triples."""
        try:
            result = step(dict(data) if isinstance(data, Mapping) else data)
        except Exception as error:
            raise HandlerError(
                f"the upcaster of {self.kind} {name!r} from version {version} raised {error!r}"
            ) from error
        if result is None:
            return []
        if isinstance(result, Mapping):
            return [(name, version + 1, result)]
        if isinstance(result, Sequence) and not isinstance(result, str | bytes):
            return [self._item(item, name, version) for item in result]
        raise HandlerError(self._bad_result(name, version, result))

    def _item(self, item: Any, name: str, version: int) -> tuple[str, int, Any]:
        if isinstance(item, tuple) and len(item) in (2, 3) and isinstance(item[0], str):
            item_name = self.aliases.get(item[0], item[0])
            if len(item) == 3 and isinstance(item[2], int) and item[2] >= 1:
                return item_name, item[2], item[1]
            if len(item) == 2:
                return item_name, version + 1 if item_name == name else 1, item[1]
        raise HandlerError(self._bad_result(name, version, item))

    def _bad_result(self, name: str, version: int, result: Any) -> str:
        return (
            f"the upcaster of {self.kind} {name!r} from version {version} returned {result!r}: "
            "expected a dict, None, or a list of (name, data) or (name, data, version)"
        )
