"""Interrupting a decision that overran the handler budget, so the worker lives on.

A handler that loops forever blocks the worker's event loop. The watchdog
(:mod:`._watchdog`) notices from its thread; if the loop's thread is inside
:func:`interruptible` (the engine deciding a batch in process), it raises
:class:`HandlerOverran` in that thread (CPython's ``PyThreadState_SetAsyncExc``:
delivered at the thread's next bytecode boundary, so a loop in Python code is
stopped; a call blocked in C, a ``time.sleep`` or a socket read, is not, and
the watchdog then ends the process as before). The engine turns it into
:class:`~._isolation.HandlerDiedError`: the batch commits nothing and counts as
a poison's attempt, exactly as a forked child that overran does, and the
quarantine takes it from there. Only a poison's first delivery runs in process,
so this is what spares the worker that delivery.

Invariants: the exception is raised only while the thread is inside
:func:`interruptible` (both sides hold one lock; one that was raised but not yet
delivered when the block ends is withdrawn), so no other code of the loop ever
sees it. It derives from ``BaseException``, so a handler's ``except Exception``
does not swallow it; a handler that swallows ``BaseException`` keeps looping,
and the watchdog's exit is the net.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_deciding: set[int] = set()  # idents of threads inside interruptible()
_raised: set[int] = set()  # ... in which HandlerOverran has been raised


class HandlerOverran(BaseException):
    """Raised inside a decision that overran the handler budget (by the watchdog's thread)."""


def _set_async_exc(ident: int, exception: type[BaseException] | None) -> int:
    set_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    return int(set_exc(ctypes.c_ulong(ident), ctypes.py_object(exception) if exception else None))


@contextmanager
def interruptible() -> Iterator[None]:
    """Around synchronous code (deciding) that :func:`interrupt` may stop."""
    ident = threading.get_ident()
    with _lock:
        _deciding.add(ident)
    try:
        yield
    finally:
        settle(ident)


def settle(ident: int) -> None:
    """The thread ``ident`` is out of :func:`interruptible`: withdraw an exception raised
    too late to land in it. Idempotent (the code that catches :class:`HandlerOverran`
    calls it again, in case the exception landed in the ``finally`` before it)."""
    with _lock:
        _deciding.discard(ident)
        if ident in _raised:
            _raised.discard(ident)
            _set_async_exc(ident, None)


def interrupt(ident: int) -> bool:
    """Raise :class:`HandlerOverran` in thread ``ident`` if it is inside
    :func:`interruptible`; whether it was (from any thread)."""
    with _lock:
        if ident not in _deciding or ident in _raised:
            return False
        _raised.add(ident)
        return _set_async_exc(ident, HandlerOverran) == 1
