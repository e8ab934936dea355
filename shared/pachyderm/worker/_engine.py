"""Apply a batch of requests: load, decide in memory, commit once, retry conflicts.

Requests to one entity (a *lane*) run in order, each on the state the
previous one left; the changes of the whole batch commit in one store
transaction. A refused change (stale state, or a command id seen before)
refuses the lane's later changes too, so those requests are decided again on
reloaded state, a bounded number of times. A result is final only once the
state it was computed from is known to be the committed one: a committed
change proves it for its lane; a lane that changed nothing is checked against
the store's current version. A lane the store refuses to load (its id belongs
to an entity of another type) is bad input of its own requests only: they are
answered with that error, it is not cached, and the rest of the batch goes on.
A lane whose history holds an event newer than this code (a newer worker wrote
it during a rolling deploy) is not decided on either: its requests end with
:class:`NewerSchemaError`, which the partition leaves unanswered for the next
owner of the partition, and the rest of the batch goes on. A lane whose snapshot
another version of the state or fold took is folded from its whole history and
snapshotted again by its next change with events.
A lane whose entity has ended (or was erased) is not handled: its commands are
answered :class:`~pachyderm.EntityEndedError` (see :mod:`pachyderm._ending`); a
change the store refuses as :class:`~pachyderm.store.Ended` (the entity ended
after this worker cached it) is decided again on the reloaded entity.
A change the store fences (:class:`~pachyderm.store.Fenced`: its entity is parked behind
a quarantined command this worker had not seen yet) ends its request and the lane's
later ones as ``fenced``, unanswered: the partition parks them in order.
A batch run with ``isolate`` (a suspect one, see :mod:`._quarantine`) is decided in
a forked child first, each round, on the state loaded for it; only if the child
survives does the worker decide it itself (:mod:`._isolation`); the child decides it
one request at a time, so one that dies names the command it died deciding
(:attr:`HandlerDiedError.culprit` and :attr:`HandlerDiedError.command_id`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from .._app import App
from .._ending import answers_ended, ended_error
from .._entity import Reject
from .._errors import HandlerError, InvalidInputError, NewerSchemaError, PachydermError
from .._execution import DEFAULT_SNAPSHOT_EVERY, Execution, execute, read_stored_reply
from .._hooks import WorkerHooks
from .._reference import Ref
from .._wire import QUERY, TIMER, Request
from ..store import (
    ENDED,
    Change,
    CommitOutcome,
    Committed,
    Conflict,
    Duplicate,
    EventStore,
    Fenced,
    TimerGone,
)
from ._cache import EntityCache
from ._firing import fire_elsewhere
from ._firing import with_timers as _with_timers
from ._group_commit import GroupCommit
from ._interruption import HandlerOverran, interruptible, settle
from ._isolation import Children, HandlerDiedError, first_to_die

log = logging.getLogger("pachyderm.worker")

DEFAULT_MAX_ATTEMPTS = 5
_LOAD_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class Done:
    """A request's final result: a reply at ``version``, a rejection, or an error."""

    version: int = 0
    reply: Any = None
    rejection: Reject | None = None
    error: PachydermError | None = None
    duplicate: bool = False
    gone: bool = False  # a fire whose timer was cancelled, replaced or fired meanwhile
    # The store's fence refused it: its entity is parked behind a quarantined command
    # (this worker's view of the quarantine was old). Not answered: to be parked.
    fenced: bool = False


_Basis = tuple[Any, int, str | None]
"""What a lane's next step is decided on: the state, its version, how the entity ended."""


@dataclass(slots=True)
class _Step:
    index: int
    request: Request
    result: Done | None = None
    change: Change | None = None
    state: Any = None  # the state after this step, if it has a change


@dataclass(slots=True)
class _Lane:
    """The steps of one entity in one round, decided from ``base_version``."""

    ref: Ref
    steps: list[_Step] = field(default_factory=list)
    base_version: int = 0

    def changes(self) -> Iterator[Change]:
        return (step.change for step in self.steps if step.change is not None)


@dataclass(slots=True)
class _Settled:
    final: list[_Step] = field(default_factory=list)
    retry: list[_Step] = field(default_factory=list)
    unverified: list[_Step] = field(default_factory=list)
    conflict: bool = False  # the store refused a change: the entity had moved on


def _copies(requests: Sequence[Request]) -> dict[int, int]:
    """Requests repeating an earlier command of the batch (a caller retrying while
    the partition was busy): index of each copy -> index of its original.

    Copies share their original's result instead of each costing a round of
    refusals, which could otherwise exhaust the attempts of the rest.
    """
    first: dict[tuple[Ref, str], int] = {}
    copies: dict[int, int] = {}
    for index, request in enumerate(requests):
        if request.kind == QUERY:
            continue
        original = first.setdefault((request.ref, request.command_id), index)
        if original != index:
            copies[index] = original
    return copies


class Engine:
    """Runs requests for the entities of ``app`` against ``store``, with a hot cache."""

    def __init__(
        self,
        app: App,
        store: EventStore,
        cache: EntityCache | None = None,
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        hooks: WorkerHooks | None = None,
        children: Children | None = None,
    ) -> None:
        """``children``: the forked children deciding suspect batches at once (see
        :mod:`._isolation`)."""
        self.app = app
        self.hooks = hooks or WorkerHooks()
        self.children = children or Children()
        self.store = store
        self._group_commit = GroupCommit(store)
        self.cache = cache if cache is not None else EntityCache()
        self.snapshot_every = snapshot_every
        self.max_attempts = max_attempts
        # Entities whose stored snapshot this code does not trust: their next change
        # with events snapshots them again.
        self._resnapshot: set[Ref] = set()
        self._in_run: dict[Ref, list[int]] = {}  # entities in a run -> their runs' partitions

    async def run(
        self, requests: Sequence[Request], *, partition: int = 0, isolate: float | None = None
    ) -> tuple[list[Done], list[Change]]:
        """Apply ``requests``; one final result each, in order, and the committed changes.

        ``partition``: the partition the requests came from, where the timers
        they schedule are filed (its owner fires them). ``isolate``: decide them in a
        forked child first, for at most that many seconds; :class:`HandlerDiedError` (nothing
        committed) if the child dies or overruns.
        """
        with self._running({request.ref for request in requests}, partition):
            return await self._run(requests, partition, isolate)

    @contextmanager
    def _running(self, refs: set[Ref], partition: int) -> Iterator[None]:
        """Mark ``refs`` as in a run; log an error if one already is in another run (an
        entity is in at most one run: its partition's turns see to that, and only a
        partition served twice, or an entity routed to two partitions, breaks it)."""
        if clash := refs & self._in_run.keys():
            log.error(
                "partition %d: %s already in a run (of partition %s): decided twice at once",
                partition,
                ", ".join(sorted(map(str, clash))),
                ", ".join(sorted({str(self._in_run[ref][0]) for ref in clash})),
                extra={"event": "engine.concurrent_run"},
            )
        for ref in refs:
            self._in_run.setdefault(ref, []).append(partition)
        try:
            yield
        finally:
            for ref in refs:
                holders = self._in_run[ref]
                holders.remove(partition)
                if not holders:
                    del self._in_run[ref]

    async def _run(
        self, requests: Sequence[Request], partition: int, isolate: float | None
    ) -> tuple[list[Done], list[Change]]:
        results: dict[int, Done] = {}
        committed: list[Change] = []
        copies = _copies(requests)
        pending = [
            _Step(index, request) for index, request in enumerate(requests) if index not in copies
        ]
        # Give up on what keeps being refused without anything settling in between
        # (another writer winning every time); a round that settles something, as
        # one resolving a duplicate does, is progress and does not count.
        fruitless = 0
        while pending and fruitless < self.max_attempts:
            before = len(pending)
            pending = await self._round(pending, results, committed, partition, isolate)
            fruitless = fruitless + 1 if len(pending) == before else 0
        for step in pending:
            error = HandlerError(f"{step.request.ref}: still conflicting after retries")
            results[step.index] = Done(error=error)
        for index, original in copies.items():
            results[index] = replace(results[original], duplicate=True)
        return [results[index] for index in range(len(requests))], committed

    async def _round(
        self,
        pending: list[_Step],
        results: dict[int, Done],
        committed: list[Change],
        partition: int,
        isolate: float | None = None,
    ) -> list[_Step]:
        lanes: dict[Ref, _Lane] = {}
        for step in pending:
            lanes.setdefault(step.request.ref, _Lane(step.request.ref)).steps.append(
                _Step(step.index, step.request)
            )
        await self._load(lanes, results)
        if isolate is not None and lanes:
            await self._probe(list(lanes.values()), partition, isolate)
        # Other runs went on while this one waited (for the child's decision, for the
        # loads): cached again what they may have dropped; what is dropped again meanwhile
        # goes round once more rather than failing the batch.
        await self._load(lanes, results)
        dropped = [lanes.pop(ref) for ref in list(lanes) if ref not in self.cache]
        self._decide_interruptibly(list(lanes.values()), partition)
        changes = [change for lane in lanes.values() for change in lane.changes()]
        outcomes = iter(await self._commit(changes) if changes else ())
        settled = [self._settle(lane, outcomes, committed) for lane in lanes.values()]
        self._count_conflicts(lanes.values(), settled)
        stale = await self._stale(
            [lane for lane, s in zip(lanes.values(), settled, strict=True) if s.unverified]
        )
        retry: list[_Step] = [step for lane in dropped for step in lane.steps]
        final: list[_Step] = []
        for lane, outcome in zip(lanes.values(), settled, strict=True):
            if lane.ref in stale:
                self.cache.forget([lane.ref])
                retry.extend(outcome.unverified)
            else:
                outcome.final.extend(outcome.unverified)
            final.extend(outcome.final)
            retry.extend(outcome.retry)
        await self._recall_failed(final)
        results.update((step.index, step.result) for step in final if step.result)
        return sorted(retry, key=lambda step: step.index)

    def _decide_interruptibly(self, lanes: list[_Lane], partition: int) -> None:
        """Decide ``lanes`` here; :class:`HandlerDiedError` (nothing decided stays) if the
        watchdog interrupts a handler that overran the budget (see :mod:`._interruption`).
        Their cached states are dropped then: a handler may have changed one in place."""
        try:
            with self.hooks.deciding(), interruptible():
                for lane in lanes:
                    self._decide(lane, partition)
        except HandlerOverran:
            settle()
            self.cache.forget([lane.ref for lane in lanes])
            refs = ", ".join(str(lane.ref) for lane in lanes)
            raise HandlerDiedError(
                f"deciding for {refs} overran the handler budget and was interrupted"
            ) from None

    async def _probe(self, lanes: list[_Lane], partition: int, limit: float) -> None:
        """Decide ``lanes`` in a forked child (its copies of them: these stay undecided),
        one request at a time, each lane's in order, so that a child that dies names the
        command it died deciding (the lane's earlier ones were decided, its later ones not
        reached: neither is blamed)."""
        steps: list[Callable[[], object]] = []
        for lane in lanes:
            deciding = self._deciding(lane, partition)  # advanced in the child only
            steps.extend(partial(next, deciding, None) for _ in lane.steps)
        async with self.children.slot(partition):
            died = await first_to_die(steps, limit)
        if died is not None:
            culprit = [step.request for lane in lanes for step in lane.steps][died]
            others = ", ".join(str(lane.ref) for lane in lanes if lane.ref != culprit.ref)
            raise HandlerDiedError(
                f"deciding command {culprit.command_id!r} for {culprit.ref} killed or hung"
                " the child it ran in" + (f" (decided beside it: {others})" if others else ""),
                culprit.ref,
                culprit.command_id,
            )

    async def _recall_failed(self, steps: list[_Step]) -> None:
        """A command whose handler failed now but which was committed before (a retry
        of one that applied) gets its stored answer, as any repeated command does."""
        failed = [
            step
            for step in steps
            if step.result is not None
            and step.result.error is not None
            and step.request.kind != QUERY
        ]
        if not failed:
            return
        found = await self.store.recorded(
            [(step.request.ref.id, step.request.command_id) for step in failed]
        )
        for step in failed:
            stored = found.get((step.request.ref.id, step.request.command_id))
            if stored is not None:
                reply, rejection = read_stored_reply(stored.reply)
                step.result = Done(stored.version, reply, rejection, duplicate=True)

    async def _load(self, lanes: dict[Ref, _Lane], results: dict[int, Done]) -> None:
        """Cache the lanes' entities; a lane whose entity cannot be decided on here is
        answered with the reason and dropped."""
        for ref, error in (await self._load_missing(list(lanes))).items():
            results.update((step.index, Done(error=error)) for step in lanes.pop(ref).steps)

    async def _load_missing(self, refs: list[Ref]) -> dict[Ref, PachydermError]:
        """Cache the entities not in the cache yet; returns those that cannot be decided
        on here, with the reason: the store refused to load them as addressed (an id of
        another type), or their history holds events newer than this code."""
        missing = [ref for ref in refs if ref not in self.cache]
        refused: dict[Ref, PachydermError] = {}
        if not missing:
            return refused
        limit = asyncio.Semaphore(_LOAD_CONCURRENCY)

        async def load(ref: Ref) -> None:
            async with limit:
                try:
                    loaded = await self.app.entity_type(ref.type).load(self.store, ref)
                except InvalidInputError as error:
                    # The caller's mistake, not the batch's: raised, it would fail them all.
                    refused[ref] = error
                    return
                except NewerSchemaError as error:
                    # Folded without that event, the state would be misread: leave the
                    # entity to a worker running the newer code.
                    log.warning("%s: not decided on by this worker: %s", ref, error)
                    self.hooks.newer_schema(ref.type, error)
                    refused[ref] = error
                    return
            if loaded.rebuilt:
                self._resnapshot.add(ref)
            self.cache.put(ref, loaded.state, loaded.version, loaded.ended)

        with self.hooks.loading(self.store, len(missing)):
            await asyncio.gather(*(load(ref) for ref in missing))
        return refused

    async def _commit(self, changes: list[Change]) -> list[CommitOutcome]:
        with self.hooks.committing(self.store, len(changes)):
            return await self._group_commit.commit(changes)

    def _count_conflicts(self, lanes: Iterable[_Lane], settled: list[_Settled]) -> None:
        for lane, outcome in zip(lanes, settled, strict=True):
            if outcome.conflict:
                self.hooks.conflict(lane.ref.type)

    def _decide(self, lane: _Lane, partition: int) -> None:
        """Decide each step on the state the previous one left (provisionally)."""
        for _ in self._deciding(lane, partition):
            pass

    def _deciding(self, lane: _Lane, partition: int) -> Iterator[_Step]:
        """Decide the lane's steps one at a time, each on the state the previous one left
        (provisionally), yielding each once decided (a child reports each: :meth:`_probe`)."""
        hot = self.cache.get(lane.ref)
        assert hot is not None
        basis: _Basis = (hot.state, hot.version, hot.ended)
        lane.base_version = hot.version
        for step in lane.steps:
            basis = self._decide_step(lane.ref, step, basis, partition)
            yield step

    def _decide_step(self, ref: Ref, step: _Step, basis: _Basis, partition: int) -> _Basis:
        """Decide ``step`` on ``basis``; the basis it leaves for the next step."""
        state, version, ended = basis
        request = step.request
        if answers_ended(ended, query=request.kind == QUERY):
            assert ended is not None
            step.result = Done(version, error=ended_error(ref, ended, version))
            return basis
        try:
            if request.kind == QUERY:
                answer = request.entity_type.answer(state, request.message)
                step.result = Done(version, answer)
                return basis
            execution = self._execute(request, ref, state, version, partition)
        except PachydermError as error:
            step.result = Done(version, error=error)
            return basis
        step.result = Done(execution.version, execution.reply, execution.rejection)
        step.change = _with_timers(request, execution.change)
        if request.trace and step.change.effects:
            # Kept with its effects, which then continue its trace even from the sweep.
            step.change = replace(step.change, trace=request.trace)
        step.state = execution.state
        return execution.state, execution.version, ENDED if step.change.ends else None

    def _execute(
        self, request: Request, ref: Ref, state: Any, version: int, partition: int
    ) -> Execution:
        if request.kind == TIMER:
            return fire_elsewhere(request, ref, state, version, partition)
        return execute(
            request.entity_type,
            ref,
            state,
            version,
            request.message,
            command_id=request.command_id,
            entity_types=self.app.entity_type,
            snapshot_every=self.snapshot_every,
            timer=request.timer,
            partition=partition,
            resnapshot=ref in self._resnapshot,
        )

    def _settle(
        self, lane: _Lane, outcomes: Iterator[CommitOutcome], committed: list[Change]
    ) -> _Settled:
        """Match the lane's steps with their commit outcomes, in order."""
        settled = _Settled()
        proven = False  # a committed change proves the lane's base state was current
        for position, step in enumerate(lane.steps):
            if step.change is None:
                (settled.final if proven else settled.unverified).append(step)
                continue
            outcome = next(outcomes)
            if isinstance(outcome, Committed):
                proven = True
                settled.final.extend(settled.unverified)
                settled.unverified.clear()
                settled.final.append(step)
                committed.append(step.change)
                if step.change.snapshot is not None:
                    self._resnapshot.discard(lane.ref)
                self.cache.put(
                    lane.ref, step.state, outcome.version, ENDED if step.change.ends else None
                )
                continue
            self.cache.forget([lane.ref])
            rest = lane.steps[position + 1 :]
            for later in rest:
                if later.change is not None:
                    next(outcomes)
            # What follows was computed on state that did not happen: decide it again.
            if isinstance(outcome, Duplicate):
                reply, rejection = read_stored_reply(outcome.reply)
                step.result = Done(outcome.version, reply, rejection, duplicate=True)
                settled.final.append(step)
                settled.retry.extend(rest)
            elif isinstance(outcome, TimerGone):
                step.result = Done(outcome.version, gone=True)
                settled.final.append(step)
                settled.retry.extend(rest)
            elif isinstance(outcome, Fenced):
                # The entity's later requests wait behind this one, parked in order.
                for later in (step, *rest):
                    later.result = Done(fenced=True)
                settled.final.extend([step, *rest])
            else:
                # A conflict, or the entity ended meanwhile (Ended): decided again once
                # reloaded, which then answers it as ended.
                settled.conflict = isinstance(outcome, Conflict)
                settled.retry.extend([step, *rest])
            break
        return settled

    async def _stale(self, lanes: list[_Lane]) -> set[Ref]:
        """Lanes whose base version is no longer the store's: their results are suspect."""
        if not lanes:
            return set()
        current = await self.store.versions([lane.ref.id for lane in lanes])
        return {lane.ref for lane in lanes if current.get(lane.ref.id, 0) != lane.base_version}
