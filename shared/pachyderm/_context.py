"""What is being handled right now: the entity inside ``handle``, the effect inside
``dispatch``.

Both are context variables, set only around the user's code they describe, so
they never leak into another entity's ``handle`` or another effect's ``dispatch``
(each runs in its own context or resets the variable when it returns).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from ._errors import PachydermError
from ._reference import Ref

_current: ContextVar[Ref] = ContextVar("pachyderm_current_ref")


def current_ref() -> Ref:
    """The reference of the entity whose ``handle`` is running.

    An entity needs it to give others a way back, e.g. the account a transfer
    came from. Raises :class:`PachydermError` outside ``handle``.
    """
    try:
        return _current.get()
    except LookupError:
        raise PachydermError("current_ref() is only available inside Entity.handle") from None


@contextmanager
def handling(ref: Ref) -> Iterator[None]:
    token = _current.set(ref)
    try:
        yield
    finally:
        _current.reset(token)


@dataclass(frozen=True, slots=True)
class EffectContext:
    """The effect an :class:`~pachyderm.EffectHandler` is dispatching.

    ``effect_id`` is stable: the same on every delivery of the effect, however
    often its command was retried or it was published, so a handler that must
    not act twice records it with what it did (or passes it on as an
    idempotency key). ``attempt`` counts this effect's deliveries to a handler,
    from 1: more than 1 means an earlier delivery was not acknowledged (a
    dispatcher died or lost its connection mid-dispatch). ``source_entity_id``
    and ``source_command_id`` name the entity and command that produced it
    (empty when the message did not say).
    """

    effect_id: str
    attempt: int
    handler: str
    source_entity_id: str = ""
    source_command_id: str = ""


_current_effect: ContextVar[EffectContext] = ContextVar("pachyderm_current_effect")


def current_effect() -> EffectContext:
    """The effect whose ``EffectHandler.dispatch`` is running.

    Raises :class:`PachydermError` outside ``dispatch``.
    """
    try:
        return _current_effect.get()
    except LookupError:
        raise PachydermError(
            "current_effect() is only available inside EffectHandler.dispatch"
        ) from None


@contextmanager
def dispatching(effect: EffectContext) -> Iterator[None]:
    token = _current_effect.set(effect)
    try:
        yield
    finally:
        _current_effect.reset(token)
