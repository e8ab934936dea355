"""Pachyderm: durable, event-sourced entities (virtual actors) for Python."""

from ._app import App
from ._context import current_ref
from ._effects import Effect, EffectHandler, Send
from ._entity import Entity, HandleResult, Reject, Reply
from ._errors import (
    DecodeError,
    DefinitionError,
    DuplicateNameError,
    EntityTypeMismatchError,
    FieldProblem,
    HandlerError,
    InvalidEntityIdError,
    InvalidInputError,
    InvalidMessageError,
    MigrationError,
    PachydermError,
    RejectedError,
    StoreError,
    StoreUnavailableError,
    UnknownNameError,
    UnsupportedContentTypeError,
)
from ._reference import Ref, entity_id

__all__ = [
    "App",
    "DecodeError",
    "DefinitionError",
    "DuplicateNameError",
    "Effect",
    "EffectHandler",
    "Entity",
    "EntityTypeMismatchError",
    "FieldProblem",
    "HandleResult",
    "HandlerError",
    "InvalidEntityIdError",
    "InvalidInputError",
    "InvalidMessageError",
    "MigrationError",
    "PachydermError",
    "Ref",
    "Reject",
    "RejectedError",
    "Reply",
    "Send",
    "StoreError",
    "StoreUnavailableError",
    "UnknownNameError",
    "UnsupportedContentTypeError",
    "current_ref",
    "entity_id",
]
