"""Run a suspect batch's handlers in a forked child first, so that a poison kills the
child, not the worker.

A command redelivered after its worker died may be the poison that killed it. Its
batch's decision (``handle``, ``update``: pure functions of state and message) is
first made in a child forked from the worker (:func:`survives`), on the very
state the worker holds. The child reports on a pipe that the decision returned
(or raised an ordinary exception, which the worker answers as a failure, as it
would in process) and exits; the worker then decides again itself and commits.
A child that ends without that report (``os._exit``, a signal, an exception
that escapes ``Exception``) or runs past the time limit (it is killed) is a
poison's attempt: :class:`HandlerDiedError`, which the quarantine counts
(:mod:`._quarantine`), and the worker lives on. So only a poison's first
delivery, which nobody suspects yet, costs a worker.

Invariants: the child never touches the worker's connections, event loop or
files: it first closes its copies of the worker's descriptors (else a worker
that dies while a child runs would leave its broker connection open, its
deliveries unreturned), runs the decision, reports on its pipe and leaves with
``os._exit`` (no clean-up, no ``atexit``); it never outlives its time limit by
more than a second, even once its worker is dead (an alarm ends it). The worker
commits only its own decision, never the child's, so nothing crosses the pipe
but bytes (no pickling of states): one after each step of the decision (a
command, or a fire), one at the end. A child that dies or hangs thus names the
step it died in (:func:`first_to_die`), and the quarantine counts an attempt
against that command only: not against the commands decided beside it, nor
against its entity's others (those before it were decided, those after it not
reached).
Handlers are decided twice for a suspect batch (a log line in a handler shows
twice); a handler that is not deterministic may still pass in the child and
fail in the worker, where the worker's own death then counts it as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Sequence

from .._errors import PachydermError
from .._reference import Ref

log = logging.getLogger("pachyderm.quarantine")

_SURVIVED = b"1"
_STEPPED = b"."
_ORPHAN_MARGIN = 1.0  # seconds a child outlives its limit at most, its worker dead
_MAX_FILES = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536
# Forked children a worker runs at once (a broker's restart redelivers every partition's
# batch in flight, each a suspect).
CHILDREN = 8
# A wait for a child's slot this long (seconds) is a warning, not a debug line: the
# worker's isolation is saturated, and an entity's redelivered commands wait with it.
LONG_CHILD_WAIT = 1.0


class HandlerDiedError(PachydermError):
    """A suspect batch's decision killed or hung the child it ran in: a poison's attempt.

    ``culprit``: the entity whose decision it died in, when known (None: any of them);
    ``command_id``: the very command it died deciding, when known (None: any of the
    entity's)."""

    def __init__(
        self, message: str, culprit: Ref | None = None, command_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.culprit = culprit
        self.command_id = command_id

    def blames(self, entity_id: uuid.UUID | None, command_id: str | None = None) -> bool:
        """Whether this death may be the doing of ``entity_id``'s command ``command_id``
        (counts an attempt of it); without ``command_id``, of any command or fire of
        ``entity_id`` (a timer's fires: one per entity in a call)."""
        if self.culprit is None:
            return True
        if self.culprit.id != entity_id:
            return False
        return command_id is None or self.command_id is None or self.command_id == command_id


class Children:
    """How many forked children a worker runs at once: ``most``.

    A slot is held from the fork to the child's end only, not while the worker then
    decides, commits and answers the batch itself, which under churn takes several
    times as long as the child (poison benchmark, session 18: a child 31 ms at the
    median, the whole suspect batch 167 ms): held for all of it, the slots, not the
    children, were what the redelivered batches queued for."""

    def __init__(self, most: int = CHILDREN) -> None:
        self.most = most
        self._slots = asyncio.Semaphore(most)

    @contextlib.asynccontextmanager
    async def slot(self, partition: int) -> AsyncIterator[None]:
        """Around one child of ``partition``'s; a wait for the slot is logged with how
        long it took (to trace stalls under churn), a free slot costs nothing more."""
        waiting = time.monotonic() if self._slots.locked() else None
        async with self._slots:
            if waiting is not None:
                _log_wait(partition, time.monotonic() - waiting, self.most)
            yield


def _log_wait(partition: int, waited: float, most: int) -> None:
    log.log(
        logging.WARNING if waited >= LONG_CHILD_WAIT else logging.DEBUG,
        "partition %d: a suspect batch waited %.3f s for a child's slot (%d at most at once)",
        partition,
        waited,
        most,
        extra={"event": "quarantine.child_wait", "partition": partition, "waited": waited},
    )


def can_isolate() -> bool:
    """Whether this platform forks and waits on a child's end without polling (Linux)."""
    return hasattr(os, "fork") and hasattr(os, "pidfd_open")


def _decide_and_leave(steps: Sequence[Callable[[], object]], report: int, limit: float) -> None:
    """The child's whole life: let go of the worker's files, decide step by step,
    reporting each, exit (never returns)."""
    survived = False
    try:
        # Its copies of the worker's sockets would keep them open past the worker's
        # death (the broker would not hand the worker's deliveries back): closing a copy
        # leaves the worker's own open. Only the standard streams and the report stay.
        os.closerange(3, report)
        os.closerange(report + 1, _MAX_FILES)
        # And it ends by itself past the limit, should the worker die before killing it.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_REAL, limit + _ORPHAN_MARGIN)
        for step in steps:
            # An ordinary exception is no poison's: the worker answers it as a failure,
            # and the next step is tried here all the same (else a poison after it
            # would run first in the worker's own process).
            with contextlib.suppress(Exception):
                step()
            os.write(report, _STEPPED)
        survived = True
    finally:
        # No clean-up (atexit, finalizers): nothing of the worker's is the child's to tidy.
        # And never back into the worker's code, whatever happens here: a report that
        # fails (the worker died meanwhile: a broken pipe) once let a child unwind into
        # its copy of the worker's stack, which ran on without a loop until it aborted.
        try:
            if survived:
                os.write(report, _SURVIVED)
        finally:
            os._exit(0)


def _fork() -> int:
    # Python 3.12 warns about forking a process with threads (the watchdog's): the
    # child runs only the pure decision and leaves with os._exit, and a child that
    # deadlocks on a lock a thread held is killed at the time limit.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


async def survives(decide: Callable[[], object], limit: float) -> bool:
    """Run ``decide`` in a forked child: True if it returned (or raised an
    :class:`Exception`) within ``limit`` seconds, False if the child died without
    saying so or overran (it is killed then)."""
    return await first_to_die([decide], limit) is None


async def first_to_die(steps: Sequence[Callable[[], object]], limit: float) -> int | None:
    """Run ``steps`` one after another in a forked child, for at most ``limit`` seconds
    in all: None if it got through them (each returned or raised an
    :class:`Exception`), else the index of the step it died in or overran in (the
    child is killed then)."""
    read, write = os.pipe()
    pid = _fork()
    if pid == 0:  # the child
        os.close(read)
        _decide_and_leave(steps, write, limit)
    os.close(write)
    try:
        try:
            ended = await _ended(pid, limit)
        except BaseException:  # cancelled (the partition stops): no child left behind
            _kill(pid)
            raise
        if not ended:
            _kill(pid)
        report = _report(read)
        if ended and report.endswith(_SURVIVED):
            return None
        return min(report.count(_STEPPED), len(steps) - 1)
    finally:
        os.close(read)


def _report(read: int) -> bytes:
    """All a child that has ended wrote on its report pipe."""
    os.set_blocking(read, False)
    report = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(read, 4096):
            report += chunk
    return report


def _kill(pid: int) -> None:
    """End child ``pid`` and reap it (at once: SIGKILL cannot be ignored)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


async def _ended(pid: int, limit: float | None) -> bool:
    """Wait for child ``pid`` to end (and reap it), for at most ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    descriptor = os.pidfd_open(pid)  # readable once the child has ended
    ended = loop.create_future()
    loop.add_reader(descriptor, lambda: None if ended.done() else ended.set_result(None))
    try:
        await asyncio.wait_for(ended, limit)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(descriptor)
        os.close(descriptor)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    """Collect child ``pid``'s status (it has ended, or SIGKILL is on its way: at once)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
