"""Effects: what an entity wants done once its events are committed.

``handle`` never acts; it returns effects as data. The runtime writes them to
the outbox in the same transaction as the events and publishes them after the
commit, so an effect goes out only for a command that really happened.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ._errors import DefinitionError
from ._reference import Ref


@dataclass(frozen=True, slots=True)
class Effect:
    """Ask the external handler registered as ``handler`` to act on ``payload``."""

    handler: str
    payload: Any = None


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver ``command`` to the entity ``to`` (an entity reference as a side effect).

    The command id is derived from the effect id, so the target applies it once
    however often the effect is published.
    """

    to: Ref
    command: Any


class EffectHandler(ABC):
    """Base for external effect handlers (the original's ``Pachyderm.Effect``).

    Subclasses set ``name`` and implement :meth:`dispatch`; entities create
    effects for them with :meth:`effect`. Effects are delivered at least once,
    so ``dispatch`` should de-duplicate on the effect id when that matters:
    inside it, :func:`~pachyderm.current_effect` gives the effect's stable id and
    which attempt this is.
    """

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise DefinitionError(f"{cls.__qualname__}.name must be a non-empty string")

    @classmethod
    def effect(cls, payload: Any = None) -> Effect:
        """An effect addressed to this handler."""
        if not isinstance(getattr(cls, "name", None), str):
            raise DefinitionError(f"{cls.__qualname__} has no name")
        return Effect(cls.name, payload)

    @abstractmethod
    def dispatch(self, payload: Any, config: Mapping[str, Any]) -> Awaitable[None] | None:
        """Carry out one effect; may be a coroutine function."""
