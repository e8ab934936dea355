"""Which entity is being handled right now, for the rare ``handle`` that needs its own id."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

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
