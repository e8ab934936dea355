"""An app: the entity types and effect handlers one fleet serves."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ._effects import EffectHandler
from ._entity import Entity
from ._entity_type import EntityType
from ._errors import DefinitionError, DuplicateNameError, UnknownNameError
from ._projection import AnyEvent, Projection


class App:
    """The entity types a fleet serves, by type name, its effect handlers and its
    projections by name.

    >>> app = App([Counter, Account], effect_handlers=[AdminMailer()])  # doctest: +SKIP

    A projection may declare only event classes of the app's entity types, or
    :class:`~pachyderm.AnyEvent` (all of them).
    """

    def __init__(
        self,
        entities: Iterable[type[Entity[Any]] | Entity[Any]],
        effect_handlers: Iterable[EffectHandler] = (),
        projections: Iterable[Projection] = (),
    ) -> None:
        self._types: dict[str, EntityType[Any]] = {}
        self._handlers: dict[str, EffectHandler] = {}
        self._projections: dict[str, Projection] = {}
        for entity in entities:
            self._add_entity(entity() if isinstance(entity, type) else entity)
        for handler in effect_handlers:
            self._add_handler(handler)
        for projection in projections:
            self._add_projection(projection)

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

    def _add_projection(self, projection: Projection) -> None:
        if not isinstance(projection, Projection):
            raise DefinitionError(f"{projection!r} is not a Projection instance")
        projection.check()
        known = {AnyEvent} | {
            cls for entity_type in self._types.values() for _, cls in entity_type.events.types()
        }
        if unknown := [cls.__qualname__ for cls in projection.events if cls not in known]:
            raise DefinitionError(
                f"projection {projection.name!r} declares events of no entity type of the app:"
                f" {', '.join(unknown)}"
            )
        if projection.name in self._projections:
            raise DuplicateNameError(f"projection {projection.name!r} is registered twice")
        self._projections[projection.name] = projection
        projection.registered(self)

    def projection(self, name: str) -> Projection:
        """The projection registered as ``name``; :class:`UnknownNameError` otherwise."""
        try:
            return self._projections[name]
        except (KeyError, TypeError):
            raise UnknownNameError(
                f"unknown projection {name!r}; registered: {', '.join(self._projections) or 'none'}"
            ) from None

    @property
    def projections(self) -> list[Projection]:
        return list(self._projections.values())

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
