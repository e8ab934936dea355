"""Entity end of life: how an ended or erased entity answers.

Invariants (the store enforces them in the commit transaction, see migration
0013; the worker only answers early):

* An entity ends once, by a committed change marked ``ends`` (``handle``
  returned :class:`~pachyderm.End`): its final state is snapshotted in that
  commit, its pending timers are deleted, and every later change to it is
  refused by the store (:class:`~pachyderm.store.Ended`), whatever state a
  worker had cached. No command is ever applied to an ended entity.
* A command answered ``ended`` is not recorded: the answer cannot change, and a
  command applied before the end still gets its own stored reply.
* Queries of an ended entity read its final state; an erased entity answers
  neither (its data is gone): both get :class:`~pachyderm.EntityErasedError`.
* An erased entity reads as version :data:`~pachyderm.store.ERASED_VERSION`
  (-1) everywhere a version is compared, so a state a worker cached before the
  erasure is never current again.
"""

from __future__ import annotations

from ._errors import EntityEndedError, EntityErasedError
from ._reference import Ref
from .store import ERASED


def ended_error(ref: Ref, how: str, version: int) -> EntityEndedError:
    """The answer to a command for ``ref``, whose life ended ``how`` at ``version``."""
    if how == ERASED:
        return EntityErasedError(f"{ref} was erased: it accepts no command or query")
    return EntityEndedError(
        f"{ref} has ended at version {version}: it accepts no command", version=version
    )


def answers_ended(how: str | None, *, query: bool) -> bool:
    """Whether a request to an entity in this state is answered with :func:`ended_error`
    instead of being handled: every command once ended; queries only once erased."""
    return how is not None and (not query or how == ERASED)
