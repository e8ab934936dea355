"""An app: the entity types and effect handlers one fleet serves."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ._effects import EffectHandler
from ._entity import Entity
from ._entity_type import EntityType
from ._errors import DefinitionError, DuplicateNameError, UnknownNameError


class App:
    """The entity types a fleet serves, by type name, and its effect handlers by name.

    >>> app = App([Counter, Account], effect_handlers=[AdminMailer()])  # doctest: +SKIP
    """

    def __init__(
        self,
        entities: Iterable[type[Entity[Any]] | Entity[Any]],
        effect_handlers: Iterable[EffectHandler] = (),
    ) -> None:
        self._types: dict[str, EntityType[Any]] = {}
        self._handlers: dict[str, EffectHandler] = {}
        for entity in entities:
            self._add_entity(entity() if isinstance(entity, type) else entity)
        for handler in effect_handlers:
            self._add_handler(handler)

    def _add_entity(self, entity: Entity[Any]) -> None:
        if not isinstance(entity, Entity):
            raise DefinitionError(f"{entity!r} is not an Entity")
        name = entity.type_name
        if name in self._types:
            raise DuplicateNameError(f"entity type {name!r} is registered twice")
        self._types[name] = EntityType(entity)

    def _add_handler(self, handler: EffectHandler) -> None:
        if not isinstance(handler, EffectHandler):
            raise DefinitionError(f"{handler!r} is not an EffectHandler instance")
        if handler.name in self._handlers:
            raise DuplicateNameError(f"effect handler {handler.name!r} is registered twice")
        self._handlers[handler.name] = handler

    def entity_type(self, name: str) -> EntityType[Any]:
        """The registered entity type called ``name``; :class:`UnknownNameError` otherwise."""
        try:
            return self._types[name]
        except (KeyError, TypeError):
            raise UnknownNameError(
                f"unknown entity type {name!r}; registered: {', '.join(self._types) or 'none'}"
            ) from None

    def effect_handler(self, name: str) -> EffectHandler:
        """The effect handler registered as ``name``; :class:`UnknownNameError` otherwise."""
        try:
            return self._handlers[name]
        except (KeyError, TypeError):
            raise UnknownNameError(f"unknown effect handler {name!r}") from None

    @property
    def effect_handlers(self) -> list[EffectHandler]:
        return list(self._handlers.values())

    def __iter__(self) -> Iterator[EntityType[Any]]:
        return iter(self._types.values())
