"""Replay check: do stored histories still read and fold with the current code?

Each history is decoded (upcast to the current versions) and folded by the app's
:class:`EntityType`, as a worker's cold load would, and the fold is compared with
the stored snapshot when the snapshot was written by code of the same
fingerprint (a snapshot of other code is ignored by workers, and so here).
Invariants: a history is checked independently of every other one; the first
event that does not decode or fold ends that entity's check (what follows
would be read on a wrong state), and is reported with its version, stored name
and schema version; nothing is written anywhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _codec
from ._app import App
from ._entity_type import EntityType
from ._errors import PachydermError
from ._histories import StoredHistory, store_histories
from ._history_file import open_export
from ._reference import Ref
from .store import EventStore, RecordedEvent, Snapshot

ProblemKind = Literal["type", "history", "decode", "fold", "snapshot"]
SnapshotUse = Literal["compared", "ignored"] | None


@dataclass(frozen=True, slots=True)
class ReplayProblem:
    """What is wrong with one entity's stored history under the current code.

    ``kind``: "type" (the app has no such entity type), "history" (versions not
    gapless from 1), "decode" (an event does not read or upcast), "fold" (``update``
    raised), "snapshot" (the fold differs from the stored snapshot, or it does not
    read). ``version``, ``event`` and ``schema_version`` name the stored event,
    when one is at fault (for "snapshot", ``version`` is the snapshot's).
    """

    ref: Ref
    kind: ProblemKind
    error: str
    version: int | None = None
    event: str | None = None
    schema_version: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.event is not None:
            where = f" at v{self.version} {self.event} (schema {self.schema_version})"
        elif self.version is not None:
            where = f" at v{self.version}"
        return f"{self.ref}{where}: {self.kind}: {self.error}"

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.ref.type,
            "id": str(self.ref.id),
            "kind": self.kind,
            "version": self.version,
            "event": self.event,
            "schema_version": self.schema_version,
            "error": self.error,
        }


@dataclass(slots=True)
class ReplayReport:
    """What a replay check found: counts, problems, and how long it took.

    ``snapshots_compared`` counts the snapshots the fold was checked against;
    ``snapshots_ignored`` those written by code of another fingerprint, which
    workers ignore (they rebuild the state from the events and snapshot it anew).
    """

    entities: int = 0
    events: int = 0
    snapshots_compared: int = 0
    snapshots_ignored: int = 0
    problems: list[ReplayProblem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every history decoded, folded and matched its snapshot."""
        return not self.problems

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def entities_with_problems(self) -> int:
        return len({problem.ref for problem in self.problems})

    def summary(self) -> str:
        """One line: entities, events, problems, snapshots, rate."""
        return (
            f"{self.entities} entities, {self.events} events,"
            f" {len(self.problems)} problems ({self.entities_with_problems} entities);"
            f" snapshots: {self.snapshots_compared} compared, {self.snapshots_ignored}"
            f" ignored (other code); {self.seconds:.2f} s, {self.events_per_s:,.0f} events/s"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entities": self.entities,
            "events": self.events,
            "snapshots_compared": self.snapshots_compared,
            "snapshots_ignored": self.snapshots_ignored,
            "problems": [problem.as_json() for problem in self.problems],
            "seconds": round(self.seconds, 6),
            "events_per_s": round(self.events_per_s, 1),
        }


Histories = AsyncIterable[StoredHistory] | Iterable[StoredHistory]
Source = EventStore | str | os.PathLike[str] | Histories
OnChecked = Callable[[StoredHistory, list[ReplayProblem]], None]


async def replay_check(
    app: App,
    source: Source,
    *,
    types: Sequence[str] | None = None,
    sample: int | None = None,
    seed: int | None = None,
    on_checked: OnChecked | None = None,
) -> ReplayReport:
    """Check stored histories against ``app``'s current code (see the module doc).

    ``source``: an event store (every entity of ``types``, default the app's, or a
    random ``sample`` of them), the path of an export file (``pachyderm export``),
    or histories (:class:`StoredHistory`). Of a file or histories, only those of
    ``types`` are checked when given; else an entity of a type the app lacks is a
    problem. ``on_checked`` is called after each entity (a progress bar)::

        report = await replay_check(app, "tests/data/production.jsonl")
        assert report.ok, "\\n".join(map(str, report.problems))
    """
    names = [app.entity_type(name).name for name in types] if types else None
    if isinstance(source, str | os.PathLike):
        if sample is not None:
            raise ValueError("a sample is drawn from a store, not from an export file")
        with open_export(source) as reader:
            return await _check(app, _of_types(reader, names), on_checked)
    if isinstance(source, AsyncIterable):
        return await _check(app, _of_types(source, names), on_checked)
    if isinstance(source, Iterable):
        return await _check(app, _of_types(source, names), on_checked)
    everything = names or [entity_type.name for entity_type in app]
    histories = store_histories(source, everything, sample=sample, seed=seed)
    return await _check(app, histories, on_checked)


def _of_types(histories: Histories, names: Sequence[str] | None) -> Histories:
    if names is None:
        return histories
    if isinstance(histories, AsyncIterable):
        return (h async for h in histories if h.ref.type in names)
    return (h for h in histories if h.ref.type in names)


async def _check(app: App, histories: Histories, on_checked: OnChecked | None) -> ReplayReport:
    report = ReplayReport()
    started = time.perf_counter()
    if isinstance(histories, AsyncIterable):
        async for history in histories:
            _record(report, app, history, on_checked)
    else:
        for history in histories:
            _record(report, app, history, on_checked)
    report.seconds = time.perf_counter() - started
    return report


def _record(
    report: ReplayReport, app: App, history: StoredHistory, on_checked: OnChecked | None
) -> None:
    problems, snapshot = check_history(app, history)
    report.entities += 1
    report.events += len(history.events)
    report.snapshots_compared += snapshot == "compared"
    report.snapshots_ignored += snapshot == "ignored"
    report.problems.extend(problems)
    if on_checked is not None:
        on_checked(history, problems)


def check_history(app: App, history: StoredHistory) -> tuple[list[ReplayProblem], SnapshotUse]:
    """The problems of one history, and what became of its snapshot: "compared" with the
    fold, "ignored" (taken by other code), or None (none, or not reached)."""
    ref = history.ref
    try:
        entity_type = app.entity_type(ref.type)
    except PachydermError as error:
        return [ReplayProblem(ref, "type", str(error))], None
    gap = _gap(history)
    if gap is not None:
        return [ReplayProblem(ref, "history", gap)], None
    snapshot = history.snapshot
    # A worker ignores a snapshot of other code (it rebuilds from the events): so here.
    if snapshot is not None and not entity_type.trusts(snapshot):
        return _fold(entity_type, history, None), "ignored"
    problems = _fold(entity_type, history, snapshot)
    # Compared, unless a problem ended the fold before the snapshot's version.
    reached = snapshot is not None and all(
        p.kind == "snapshot" or (p.version or 0) > snapshot.version for p in problems
    )
    return problems, "compared" if reached else None


def _fold(
    entity_type: EntityType[Any], history: StoredHistory, snapshot: Snapshot | None
) -> list[ReplayProblem]:
    """Decode and fold every event, comparing with ``snapshot`` at its version; the
    first problem ends it."""
    ref = history.ref
    state = entity_type.initial_state()
    for event in history.events:
        try:
            seen = entity_type.decode_events(event.name, event.data, event.schema_version)
        except Exception as error:  # whatever an upcaster raises is the finding
            return [_event_problem(ref, "decode", event, error)]
        try:
            state = entity_type.evolve(state, seen)
        except PachydermError as error:
            return [_event_problem(ref, "fold", event, error)]
        if snapshot is not None and event.version == snapshot.version:
            mismatch = _snapshot_mismatch(entity_type, state, snapshot.state)
            if mismatch is not None:
                return [ReplayProblem(ref, "snapshot", mismatch, snapshot.version)]
    return []


def _gap(history: StoredHistory) -> str | None:
    """What breaks the history's shape: a version out of line, a snapshot past the end."""
    for expected, event in enumerate(history.events, start=1):
        if event.version != expected:
            return f"expected version {expected}, found {event.version}: the history has a gap"
    if history.snapshot is not None and history.snapshot.version > history.version:
        return (
            f"the snapshot is of version {history.snapshot.version}, "
            f"after the last event ({history.version})"
        )
    return None


def _event_problem(
    ref: Ref, kind: ProblemKind, event: RecordedEvent, error: BaseException
) -> ReplayProblem:
    return ReplayProblem(
        ref,
        kind,
        f"{type(error).__name__}: {error}",
        event.version,
        event.name,
        event.schema_version,
    )


def _snapshot_mismatch(entity_type: EntityType[Any], state: Any, stored: bytes) -> str | None:
    """Why the fold ``state`` differs from the ``stored`` snapshot state, or None.

    Both are compared as plain data after a trip through the codec, as a snapshot
    is written: the comparison sees what a worker would load.
    """
    try:
        snapshot_state = entity_type.dump_state(entity_type.decode_state(stored))
    except PachydermError as error:
        return f"the snapshot does not read: {error}"
    folded = _codec.decode_stored(entity_type.encode_state(state))
    if folded == _codec.decode_stored(_codec.encode(snapshot_state)):
        return None
    return f"the fold gives {folded!r}, the snapshot holds {snapshot_state!r}"
