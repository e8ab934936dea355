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
:func:`interruptible` (both sides hold one lock), so no other code of the loop ever
sees it: one raised but not yet delivered when the block ends is taken in
:func:`settle`, by running bytecode until it lands. It is never withdrawn with
``PyThreadState_SetAsyncExc(id, NULL)``: on CPython 3.11 that leaves the
interpreter's eval breaker set for good (every thread then takes the slow path at
each check, and under a C trace function such as coverage's, a thread spins
there forever). It derives from ``BaseException``, so a handler's
``except Exception`` does not swallow it; a handler that swallows
``BaseException`` keeps looping, and the watchdog's exit is the net.
"""

from __future__ import annotations

import ctypes
import threading

_lock = threading.Lock()
_deciding: set[int] = set()  # idents of threads inside interruptible()
_raised: set[int] = set()  # ... in which HandlerOverran has been raised
_CHECKS = 1000  # eval-breaker checks in which a pending one surely lands (the first does)


class HandlerOverran(BaseException):
    """Raised inside a decision that overran the handler budget (by the watchdog's thread)."""


def _set_async_exc(ident: int, exception: type[BaseException]) -> int:
    set_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    return int(set_exc(ctypes.c_ulong(ident), ctypes.py_object(exception)))


def interruptible() -> _Decision:
    """Around synchronous code (deciding) that :func:`interrupt` may stop."""
    return _Decision()


class _Decision:
    """The block of :func:`interruptible` (a class: its exit must see whether the
    exception landed, and a generator's ``finally`` could be interrupted itself)."""

    def __enter__(self) -> None:
        with _lock:
            _deciding.add(threading.get_ident())

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        settle(landed=kind is not None and issubclass(kind, HandlerOverran))


def settle(*, landed: bool = True) -> None:
    """This thread is out of :func:`interruptible`; take an exception raised in it that
    has not landed yet (``landed``: it has, the caller caught it). Idempotent (the code
    that catches :class:`HandlerOverran` calls it again, in case the exception landed
    in the block's exit, before the state was cleared)."""
    ident = threading.get_ident()
    with _lock:
        _deciding.discard(ident)
        raised = ident in _raised
        _raised.discard(ident)
    if raised and not landed:
        _absorb()


def _absorb() -> None:
    """Let a pending :class:`HandlerOverran` land here: CPython delivers it at the next
    check of the eval breaker, which every backward jump makes. Finding none is
    fine: the handler caught it and carried on."""
    try:
        for _ in range(_CHECKS):
            pass
    except HandlerOverran:
        return


def interrupt(ident: int) -> bool:
    """Raise :class:`HandlerOverran` in thread ``ident`` if it is inside
    :func:`interruptible`; whether it was (from any thread)."""
    with _lock:
        if ident not in _deciding or ident in _raised:
            return False
        _raised.add(ident)
        return _set_async_exc(ident, HandlerOverran) == 1
