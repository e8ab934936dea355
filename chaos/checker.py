"""The checker: the record of a run against the database and what consumers saw.

:func:`check` is pure: it takes what :func:`read_database` read from the
namespace's tables, what the effects sink and the final queries observed,
and the record, and returns every violation of the guarantees found, by kind:

- ``lost``: a command acknowledged as done (an ``ok`` reply, or a broker
  confirm for a command sent without a reply) is not in the store, and was
  not dead-lettered either; or a rejection the caller was told is not stored
  (a retry must get the same answer);
- ``duplicated``: a command applied more than once (its events in more than
  one run of versions, or not matching its recorded command id);
- ``effect_without_commit``: an effect seen, or a command applied, that no
  committed command produced (no outbox row, no committed source);
- ``effect_never_published``: a committed effect no consumer ever saw (for
  an entity, one its target never applied);
- ``history_gap``: versions not exactly 1..n, or an entity's, command's or
  snapshot's version beyond its history;
- ``state_mismatch``: a snapshot, a stored reply, an ``ok`` reply or a final
  query that differs from the fold of the history at its version, or an
  answer that differs from the one stored for its command id;
- ``refused_applied``: a command every attempt of which was refused
  (rejected, invalid, failed) that the store applied all the same;
- ``timer_unfired``: a timer set by a committed command (``Reminded``) that
  neither rang nor was cancelled (``Forgot``), or a timer still pending in the
  store once every one resolved;
- ``timer_repeated``: a timer that rang more than once, or rang and was
  cancelled too: fired twice in effect, or after its cancel won;
- ``timer_early``: a ring committed before the due time of the timer that
  fired it;
- ``timer_unscheduled``: a ring of a timer no committed command set;
- ``applied_after_end``: a command applied to an entity after its handler ended
  it (an event, or a recorded command, past the version it ended at; an ending
  event that is not its entity's last), or an entity whose history ends it that
  the store does not hold as ended;
- ``projection_mismatch``: the run's exactly-once read model (``chaos.app``'s
  ``EventCounts``, read once it caught up with the log) differs from the stored
  histories: an entity's event count or last version, or an entity it has and
  the store does not. Not checked when the namespace has no read model.
- ``quarantine_violated`` (runs with poison commands, ``chaos.app``'s
  ``Volatile``): an event of a poisoned entity committed while its poison was
  quarantined and the entity parked (from its quarantine to the operator's
  decision); a poison that applied, or was never quarantined; a poison timer
  (``Volatile``'s ``Defer``) not held at the end; a command left
  parked at the end; or, given a ``stall_bound``, a healthy entity stalled: a
  request to an entity no poison was sent to that its caller gave up on, or
  whose answer came more than ``stall_bound`` seconds after its first send.
- ``split_entity``: an entity whose events were committed by more than one
  partition (the event log's partition column): its commands reached two
  partition queues, as when a broker restart rebuilt the hash ring in another
  order. (A run that grows the partition count would move entities on purpose;
  the chaos runs do not.)

The ``timer_*`` kinds are the run's *timer violations*.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from pachyderm import App, PachydermError
from pachyderm import _codec as codec
from pachyderm._execution import read_stored_reply

from .app import POISON_TIMER, POISONS, TIMER_POISON, Ticket, Volatile
from .record import OK, REJECTED, Attempt, Record, Request

KINDS = (
    "lost",
    "duplicated",
    "effect_without_commit",
    "effect_never_published",
    "history_gap",
    "state_mismatch",
    "refused_applied",
    "timer_unfired",
    "timer_repeated",
    "timer_early",
    "timer_unscheduled",
    "projection_mismatch",
    "applied_after_end",
    "quarantine_violated",
    "split_entity",
)
TIMER_KINDS = tuple(kind for kind in KINDS if kind.startswith("timer_"))

# -- what the database holds ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntityRow:
    entity_id: uuid.UUID
    entity_type: str
    version: int
    ended: str | None = None  # "ended", "erased" (migration 0013)
    ended_version: int | None = None


@dataclass(frozen=True, slots=True)
class EventRow:
    entity_id: uuid.UUID
    version: int
    name: str
    data: bytes
    command_id: str | None
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CommandRow:
    entity_id: uuid.UUID
    command_id: str
    version: int
    reply: bytes


@dataclass(frozen=True, slots=True)
class OutboxRow:
    effect_id: uuid.UUID
    entity_id: uuid.UUID
    command_id: str
    destination: str
    payload: bytes
    published: bool


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    entity_id: uuid.UUID
    version: int
    state: bytes


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    entity_id: uuid.UUID
    command_id: str
    status: str
    quarantined_at: datetime
    decided_at: datetime | None


@dataclass(slots=True)
class Stored:
    """The tables of one namespace, as read at the end of a run."""

    entities: list[EntityRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    commands: list[CommandRow] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    snapshots: list[SnapshotRow] = field(default_factory=list)
    timers: int = 0  # still pending, held ones aside
    held: set[tuple[uuid.UUID, str]] = field(default_factory=set)  # timers held as poisons
    # The read model: entity id -> (events, last version); None: no read model here.
    projected: dict[uuid.UUID, tuple[int, int]] | None = None
    quarantine: list[QuarantineRow] = field(default_factory=list)
    parked: int = 0  # commands of parked entities still waiting
    # Entities whose events more than one partition committed: entity id -> partitions.
    split: dict[uuid.UUID, list[int]] = field(default_factory=dict)
    # Each entity's partition in the event log (its lowest, if split).
    partitions: dict[uuid.UUID, int] = field(default_factory=dict)


_HELD = "fire_at > now() + interval '50 years'"


async def read_database(dsn: str, schema: str) -> Stored:
    """Read every table the checker needs from the namespace ``schema``."""
    connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:

        async def rows(query: str) -> list[dict[str, Any]]:
            return [dict(row) for row in await connection.fetch(query)]

        return Stored(
            entities=[
                EntityRow(**row)
                for row in await rows(
                    "SELECT entity_id, entity_type, version, ended, ended_version FROM entities"
                )
            ],
            events=[
                EventRow(**row)
                for row in await rows(
                    "SELECT entity_id, version, name, data, command_id, recorded_at FROM events"
                    " ORDER BY entity_id, version"
                )
            ],
            commands=[
                CommandRow(**row)
                for row in await rows("SELECT entity_id, command_id, version, reply FROM commands")
            ],
            outbox=[
                OutboxRow(**row)
                for row in await rows(
                    "SELECT effect_id, entity_id, command_id, destination, payload,"
                    " published_at IS NOT NULL AS published FROM outbox"
                )
            ],
            snapshots=[
                SnapshotRow(**row)
                for row in await rows("SELECT entity_id, version, state FROM snapshots")
            ],
            # Held (see pachyderm.worker._timer_poison): not tried again for a century.
            timers=int(await connection.fetchval(f"SELECT count(*) FROM timers WHERE NOT {_HELD}")),
            held={
                (row["entity_id"], row["timer_key"])
                for row in await rows(f"SELECT entity_id, timer_key FROM timers WHERE {_HELD}")
            },
            projected=await _projected(connection),
            quarantine=[
                QuarantineRow(**row)
                for row in await rows(
                    "SELECT entity_id, command_id, status, quarantined_at, decided_at"
                    " FROM quarantine"
                )
            ],
            parked=int(await connection.fetchval("SELECT count(*) FROM parked_commands")),
            split={
                row["entity_id"]: sorted(row["partitions"])
                for row in await rows(
                    "SELECT entity_id, array_agg(DISTINCT partition) AS partitions FROM event_log"
                    " GROUP BY entity_id HAVING count(DISTINCT partition) > 1"
                )
            },
            partitions={
                row["entity_id"]: row["partition"]
                for row in await rows(
                    "SELECT entity_id, min(partition) AS partition FROM event_log"
                    " GROUP BY entity_id"
                )
            },
        )
    finally:
        await connection.close()


async def _projected(connection: asyncpg.Connection) -> dict[uuid.UUID, tuple[int, int]] | None:
    if await connection.fetchval("SELECT to_regclass('chaos_projected')") is None:
        return None
    rows = await connection.fetch("SELECT entity_id, events, last_version FROM chaos_projected")
    return {row["entity_id"]: (row["events"], row["last_version"]) for row in rows}


async def projection_behind(dsn: str, schema: str, projection: str) -> int:
    """Log positions ``projection`` has yet to apply, over every partition's log."""
    connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        heads = await connection.fetchval("SELECT coalesce(sum(position), 0) FROM log_heads")
        applied = await connection.fetchval(
            "SELECT coalesce(sum(position), 0) FROM projection_cursors WHERE projection = $1",
            projection,
        )
    finally:
        await connection.close()
    return int(heads) - int(applied)


# -- what consumers saw ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeenEffect:
    """An effect as the effects exchange delivered it to the sink."""

    effect_id: str
    routing_key: str
    source_entity: str
    source_command: str
    payload: bytes


@dataclass(slots=True)
class Observed:
    """What consumers saw: effects (each delivery), dead letters, and final queries."""

    effects: list[SeenEffect] = field(default_factory=list)
    # (entity id, message id) of every command in the dead-letter queue.
    dead_letters: set[tuple[str, str]] = field(default_factory=set)
    # entity id -> (version, reply) of a query sent after the run settled.
    queries: dict[uuid.UUID, tuple[int, Any]] = field(default_factory=dict)


# -- the verdict ----------------------------------------------------------------------------


@dataclass(slots=True)
class Violations:
    """Violations found, by kind, each described for a human."""

    found: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})

    def add(self, kind: str, description: str) -> None:
        self.found[kind].append(description)

    def counts(self) -> dict[str, int]:
        return {kind: len(found) for kind, found in self.found.items()}

    def timer_violations(self) -> int:
        return sum(len(self.found[kind]) for kind in TIMER_KINDS)

    @property
    def clean(self) -> bool:
        return not any(self.found.values())

    def describe(self, limit: int = 5) -> str:
        lines = []
        for kind, found in self.found.items():
            if found:
                lines.append(f"{kind}: {len(found)}")
                lines.extend(f"  - {description}" for description in found[:limit])
        return "\n".join(lines) or "no violations"


# -- the check --------------------------------------------------------------------------------


class _Histories:
    """Each entity's history and the state (as plain data) after each of its versions."""

    def __init__(self, app: App, stored: Stored, violations: Violations) -> None:
        self.types = {row.entity_id: row.entity_type for row in stored.entities}
        self.versions = {row.entity_id: row.version for row in stored.entities}
        self.events: dict[uuid.UUID, list[EventRow]] = defaultdict(list)
        for event in sorted(stored.events, key=lambda e: (e.entity_id, e.version)):
            self.events[event.entity_id].append(event)
        self.states: dict[uuid.UUID, list[Any]] = {}
        for entity_id, entity_type in self.types.items():
            self.states[entity_id] = self._fold(app, entity_id, entity_type, violations)

    def _fold(self, app: App, entity_id: uuid.UUID, name: str, violations: Violations) -> list[Any]:
        try:
            entity_type = app.entity_type(name)
            state = entity_type.initial_state()
            states = [entity_type.dump_state(state)]
            for event in self.events.get(entity_id, []):
                decoded = entity_type.decode_event(event.name, event.data)
                state = entity_type.evolve(state, [decoded])
                states.append(entity_type.dump_state(state))
        except PachydermError as error:
            violations.add("state_mismatch", f"{entity_id}: history does not fold: {error}")
            return []
        return states

    def state_at(self, entity_id: uuid.UUID, version: int) -> Any:
        """The folded state at ``version``; KeyError when there is no such version."""
        states = self.states.get(entity_id, [])
        if not 0 <= version < len(states):
            raise KeyError((entity_id, version))
        return states[version]


def _check_gapless(histories: _Histories, violations: Violations) -> None:
    for entity_id, version in histories.versions.items():
        versions = [event.version for event in histories.events.get(entity_id, [])]
        if versions != list(range(1, len(versions) + 1)):
            violations.add("history_gap", f"{entity_id}: versions {versions}")
        elif version != len(versions):
            violations.add(
                "history_gap", f"{entity_id}: at version {version} with {len(versions)} events"
            )
    for entity_id in histories.events.keys() - histories.versions.keys():
        violations.add("history_gap", f"{entity_id}: events of an entity that does not exist")


def _check_commands(
    histories: _Histories, commands: dict[tuple[uuid.UUID, str], CommandRow], violations: Violations
) -> None:
    """Each command's events: one unbroken run of versions ending at its recorded version."""
    for entity_id, events in histories.events.items():
        runs: dict[str | None, list[list[int]]] = defaultdict(list)
        previous: str | None = None
        for event in events:
            if not runs[event.command_id] or previous != event.command_id:
                runs[event.command_id].append([])
            runs[event.command_id][-1].append(event.version)
            previous = event.command_id
        for command_id, found in runs.items():
            row = commands.get((entity_id, command_id or ""))
            if len(found) > 1:
                violations.add("duplicated", f"{entity_id}: {command_id} applied at {found}")
            elif row is None or row.version != found[0][-1]:
                recorded = None if row is None else row.version
                violations.add(
                    "duplicated",
                    f"{entity_id}: {command_id} events at {found[0]}, recorded at {recorded}",
                )
    for row in commands.values():
        if row.entity_id not in histories.types and row.version == 0:
            continue  # a command that wrote only its reply creates no entity (0013)
        try:
            state = histories.state_at(row.entity_id, row.version)
        except KeyError:
            violations.add("history_gap", f"{row.entity_id}: {row.command_id} at {row.version}")
            continue
        reply, rejection = read_stored_reply(row.reply)
        if rejection is None and reply != state:
            violations.add(
                "state_mismatch",
                f"{row.entity_id}: stored reply of {row.command_id} at {row.version}"
                f" is {reply!r}, the fold {state!r}",
            )


def _check_snapshots(
    histories: _Histories, app: App, snapshots: Iterable[SnapshotRow], violations: Violations
) -> None:
    for snapshot in snapshots:
        where = f"{snapshot.entity_id}: snapshot at {snapshot.version}"
        try:
            expected = histories.state_at(snapshot.entity_id, snapshot.version)
        except KeyError:
            violations.add("history_gap", f"{where}, beyond its history")
            continue
        entity_type = app.entity_type(histories.types[snapshot.entity_id])
        if entity_type.dump_state(entity_type.decode_state(snapshot.state)) != expected:
            violations.add("state_mismatch", f"{where} differs from the fold")


def _check_request(
    request: Request,
    histories: _Histories,
    commands: dict[tuple[uuid.UUID, str], CommandRow],
    observed: Observed,
    violations: Violations,
    *,
    quarantined: Mapping[tuple[uuid.UUID, str], str],
    record: Record,
) -> None:
    """What the caller was told against what the store recorded for its command id."""
    entity_id = uuid.UUID(request.entity_id)
    row = commands.get((entity_id, request.command_id))
    stored = None if row is None else read_stored_reply(row.reply)
    applied = stored is not None and stored[1] is None
    where = f"{request.caller} {request.command} {request.command_id} to {entity_id}"
    if (status := quarantined.get((entity_id, request.command_id))) is not None:
        # Not stored because set aside as a poison's: say so, the cause differs.
        where += f" (in quarantine, {status})"
    dead = (request.entity_id, request.command_id) in observed.dead_letters
    if request.acknowledged and not applied:
        violations.add("lost", f"{where}: acknowledged, stored as {stored}{_when(request, record)}")
    elif request.confirmed and not applied and not dead:
        violations.add(
            "lost", f"{where}: confirmed by the broker, stored as {stored}{_when(request, record)}"
        )
    elif request.refused and applied:
        violations.add("refused_applied", f"{where}: told {request.outcomes()}, applied")
    for attempt in request.attempts:
        if attempt.outcome == OK and applied:
            assert row is not None
            _check_reply(attempt, row, histories, f"{where}: ok", violations)
        elif attempt.outcome == REJECTED:
            if stored is None:
                violations.add("lost", f"{where}: told rejected, the rejection not stored")
            elif applied and not request.refused:
                violations.add("state_mismatch", f"{where}: told both ok and rejected")
            elif not applied and stored[1] is not None and stored[1].reason != attempt.detail:
                violations.add("state_mismatch", f"{where}: told {attempt.detail}, stored {stored}")


def _check_reply(
    attempt: Attempt, row: CommandRow, histories: _Histories, where: str, violations: Violations
) -> None:
    """An ``ok`` answer: at the version its command is recorded at, the fold there."""
    if attempt.version is not None and attempt.version != row.version:
        violations.add("state_mismatch", f"{where} at {attempt.version}, stored at {row.version}")
        return
    try:
        state = histories.state_at(row.entity_id, row.version)
    except KeyError:
        return  # a command beyond its history: a gap, reported as such
    if attempt.reply != state:
        violations.add("state_mismatch", f"{where}: reply {attempt.reply!r}, the fold {state!r}")


def _check_effects(
    stored: Stored,
    commands: dict[tuple[uuid.UUID, str], CommandRow],
    observed: Observed,
    violations: Violations,
) -> None:
    outbox = {str(row.effect_id): row for row in stored.outbox}
    for row in stored.outbox:
        if (row.entity_id, row.command_id) not in commands:
            violations.add("effect_without_commit", f"outbox {row.effect_id}: no committed source")
    for seen in observed.effects:
        source = outbox.get(seen.effect_id)
        if source is None:
            violations.add("effect_without_commit", f"effect {seen.effect_id}: not in the outbox")
        elif (seen.routing_key, seen.payload, seen.source_entity, seen.source_command) != (
            source.destination,
            source.payload,
            str(source.entity_id),
            source.command_id,
        ):
            violations.add("effect_without_commit", f"effect {seen.effect_id}: not as committed")
    for row in unapplied_sends(stored, observed.dead_letters):
        violations.add("effect_never_published", f"{row.effect_id}: never applied by {target(row)}")
    seen_ids = {seen.effect_id for seen in observed.effects}
    for effect_id, row in outbox.items():
        if not is_send(row) and effect_id not in seen_ids:
            violations.add("effect_never_published", f"{effect_id} ({row.destination}): never seen")


def is_send(row: OutboxRow) -> bool:
    """Whether the effect is a command to another entity (else: to a handler)."""
    return row.destination.startswith("command.")


def target(send: OutboxRow) -> uuid.UUID:
    """The entity a Send is addressed to."""
    return uuid.UUID(codec.decode(send.payload)["entity_id"])


def unapplied_sends(stored: Stored, dead_letters: set[tuple[str, str]]) -> list[OutboxRow]:
    """The committed Sends their target has neither applied (the effect id is a command id
    there) nor dead-lettered."""
    applied = {(row.entity_id, row.command_id) for row in stored.commands}
    return [
        row
        for row in stored.outbox
        if is_send(row)
        and (target(row), str(row.effect_id)) not in applied
        and (str(target(row)), str(row.effect_id)) not in dead_letters
    ]


def _check_origins(
    record: Record,
    stored: Stored,
    commands: dict[tuple[uuid.UUID, str], CommandRow],
    violations: Violations,
) -> None:
    """Every applied command was sent by a caller, or is an effect a committed command sent."""
    sent = {(uuid.UUID(request.entity_id), request.command_id) for request in record}
    # Fired by a timer (whether some command set it is checked with the timers; a
    # volatile entity's ticks, with the quarantine).
    sent |= {
        (event.entity_id, event.command_id or "")
        for event in stored.events
        if is_ring(event) or event.name == TICKED
    }
    for row in stored.outbox:
        if is_send(row):
            sent.add((target(row), str(row.effect_id)))
    for key in commands.keys() - sent:
        violations.add("effect_without_commit", f"{key[0]}: applied {key[1]}, which nobody sent")


RESOLVED = {"Rang", "Forgot"}
TICKED = "Ticked"  # a volatile entity's tick: its command is a timer's


def is_ring(event: EventRow) -> bool:
    return event.name == "Rang"


def _check_timers(histories: _Histories, pending: int, violations: Violations) -> None:
    """Each timer (a ``Reminded``) resolved once: one ring, not early, or one cancel."""
    unresolved = 0
    for entity_id, events in histories.events.items():
        resolved: dict[str, list[str]] = defaultdict(list)
        for event in events:
            if event.name not in RESOLVED:
                continue
            tag = codec.decode(event.data)["tag"]
            resolved[tag].append(event.name)
            if is_ring(event):
                _check_ring(entity_id, event, violations)
        set_tags = {codec.decode(e.data)["tag"] for e in events if e.name == "Reminded"}
        for tag in set_tags:
            if not resolved.get(tag):
                unresolved += 1
                violations.add("timer_unfired", f"{entity_id}: timer {tag} neither rang nor forgot")
            elif len(resolved[tag]) > 1:
                violations.add("timer_repeated", f"{entity_id}: timer {tag}: {resolved[tag]}")
        for tag in resolved.keys() - set_tags:
            violations.add("timer_unscheduled", f"{entity_id}: timer {tag} rang, never set")
    if pending and not unresolved:
        violations.add("timer_unfired", f"{pending} timers pending with every timer resolved")


def _check_ring(entity_id: uuid.UUID, ring: EventRow, violations: Violations) -> None:
    due = float(codec.decode(ring.data)["due"])
    if ring.recorded_at is not None and ring.recorded_at.timestamp() < due:
        early = due - ring.recorded_at.timestamp()
        violations.add("timer_early", f"{entity_id}: {ring.command_id} {early * 1000:.1f} ms early")


def _check_queries(histories: _Histories, observed: Observed, violations: Violations) -> None:
    for entity_id, (version, reply) in observed.queries.items():
        current = histories.versions.get(entity_id, 0)
        if version != current:
            violations.add("state_mismatch", f"{entity_id}: query at {version}, stored {current}")
            continue
        try:
            expected = histories.state_at(entity_id, version)
        except KeyError:
            continue  # a version beyond its history: a gap, reported as such
        if reply != expected:
            violations.add(
                "state_mismatch", f"{entity_id}: query answered {reply!r}, the fold {expected!r}"
            )


def _check_projection(histories: _Histories, stored: Stored, violations: Violations) -> None:
    if stored.projected is None:
        return
    for entity_id, events in histories.events.items():
        expected = (len(events), events[-1].version)
        found = stored.projected.get(entity_id)
        if found != expected:
            violations.add(
                "projection_mismatch",
                f"{entity_id}: read model (events, last version) {found}, stored {expected}",
            )
    for entity_id in stored.projected.keys() - histories.events.keys():
        violations.add("projection_mismatch", f"{entity_id}: in the read model, not in the store")


def _check_ends(
    app: App,
    stored: Stored,
    histories: _Histories,
    commands: dict[tuple[uuid.UUID, str], CommandRow],
    violations: Violations,
) -> None:
    """No command applies to an ended entity: nothing past the version it ended at."""
    rows = {row.entity_id: row for row in stored.entities}
    ending = {
        entity_id: max(
            event.version for event in events if _ends(app, histories.types[entity_id], event.name)
        )
        for entity_id, events in histories.events.items()
        if entity_id in histories.types
        and any(_ends(app, histories.types[entity_id], event.name) for event in events)
    }
    for entity_id, version in ending.items():
        row = rows[entity_id]
        if row.ended != "ended" or row.ended_version != version:
            violations.add(
                "applied_after_end",
                f"{entity_id}: ended at {version}, stored as {row.ended} at {row.ended_version}",
            )
        if histories.events[entity_id][-1].version != version:
            later = [e.version for e in histories.events[entity_id] if e.version > version]
            violations.add("applied_after_end", f"{entity_id}: ended at {version}, then {later}")
    for (entity_id, command_id), command in commands.items():
        if entity_id in ending and command.version > ending[entity_id]:
            violations.add(
                "applied_after_end",
                f"{entity_id}: {command_id} recorded at {command.version}, after its end",
            )


def _ends(app: App, entity_type: str, event_name: str) -> bool:
    """Whether ``event_name`` is the event an entity of the run ends with."""
    return entity_type == Ticket.type_name and event_name == "Retired"


def poisons(record: Record) -> list[Request]:
    """The run's poison commands (each to a volatile entity of its own)."""
    return [r for r in record if r.entity_type == Volatile.type_name and r.command in POISONS]


def _check_poison_timers(
    record: Record,
    stored: Stored,
    commands: dict[tuple[uuid.UUID, str], CommandRow],
    violations: Violations,
) -> None:
    """Each poison timer set (a ``Defer`` that applied) is held at the end."""
    for request in record:
        key = (uuid.UUID(request.entity_id), request.command_id)
        set_ = request.command == TIMER_POISON and key in commands
        if set_ and (key[0], POISON_TIMER) not in stored.held:
            where = f"{request.command} {request.command_id} to {key[0]}"
            violations.add("quarantine_violated", f"{where}: its poison timer is not held")


def _check_quarantine(
    record: Record,
    stored: Stored,
    histories: _Histories,
    commands: dict[tuple[uuid.UUID, str], CommandRow],
    violations: Violations,
    *,
    stall_bound: float | None,
) -> None:
    """Poisons set aside, their entities parked meanwhile; the healthy never held up."""
    rows = {(row.entity_id, row.command_id): row for row in stored.quarantine}
    poisoned: set[uuid.UUID] = set()
    for request in poisons(record):
        key = (uuid.UUID(request.entity_id), request.command_id)
        poisoned.add(key[0])
        where = f"{request.command} {request.command_id} to {key[0]}"
        if key in commands:
            violations.add("quarantine_violated", f"{where}: a poison applied")
        if key not in rows:
            violations.add("quarantine_violated", f"{where}: never quarantined")
    _check_poison_timers(record, stored, commands, violations)
    for row in stored.quarantine:
        for event in histories.events.get(row.entity_id, []):
            at = event.recorded_at
            if (
                at is not None
                and at >= row.quarantined_at
                and (row.decided_at is None or at < row.decided_at)
            ):
                violations.add(
                    "quarantine_violated",
                    f"{row.entity_id}: {event.command_id} applied at version {event.version}"
                    f" while parked behind {row.command_id}",
                )
    if stored.parked:
        violations.add("quarantine_violated", f"{stored.parked} commands still parked")
    if stall_bound is not None:
        _check_stalls(record, stored, histories, poisoned, violations, stall_bound=stall_bound)


def _check_stalls(
    record: Record,
    stored: Stored,
    histories: _Histories,
    poisoned: set[uuid.UUID],
    violations: Violations,
    *,
    stall_bound: float,
) -> None:
    """Healthy requests answered past ``stall_bound`` seconds, or never; each shown with
    its entity's partition and when its first event committed, to tell a late commit
    (the partition's owner) from a late answer (the reply's way back) in the logs."""
    committed = {
        (event.entity_id, event.command_id): event.recorded_at
        for events in histories.events.values()
        for event in reversed(events)
    }
    for request in record:
        entity_id = uuid.UUID(request.entity_id)
        if entity_id in poisoned:
            continue
        answered = [a.answered_at for a in request.attempts if a.answered_at is not None]
        first = request.attempts[0].sent_at if request.attempts else 0.0
        took = answered[-1] - first if answered and request.answered else None
        if took is not None and took <= stall_bound:
            continue
        shown = "never answered" if took is None else f"answered after {took:.1f} s"
        shown += f" (first sent at {_sent(request, record)}"
        shown += f", partition {stored.partitions.get(entity_id, '?')}"
        if (at := committed.get((entity_id, request.command_id))) is not None:
            shown += f", committed after {record.since(at) - first:.1f} s"
        shown += f"; by {request.caller}, {_attempts(request, first)}"
        violations.add(
            "quarantine_violated",
            f"healthy {request.command} {request.command_id} to {entity_id}: {shown})",
        )


def _sent(request: Request, record: Record) -> str:
    """When ``request`` was first sent, as the run's faults and the workers' logs say it."""
    first = request.attempts[0].sent_at if request.attempts else 0.0
    return f"{first:.1f} s into the run, {record.clock(first)} UTC"


def _when(request: Request, record: Record) -> str:
    """A lost request's timeline, to set beside the faults' times and the logs."""
    first = request.attempts[0].sent_at if request.attempts else 0.0
    return f" (first sent at {_sent(request, record)}; {_attempts(request, first)})"


def _attempts(request: Request, first: float) -> str:
    """Each attempt as seconds after the first send: sent, then how it ended (and when)."""
    shown = []
    for attempt in request.attempts:
        ended = attempt.outcome
        if attempt.answered_at is not None:
            ended += f" +{attempt.answered_at - first:.1f}"
        shown.append(f"+{attempt.sent_at - first:.1f} {ended}")
    return f"attempts: {', '.join(shown)}"


def check(
    app: App,
    record: Record,
    stored: Stored,
    observed: Observed,
    *,
    stall_bound: float | None = None,
) -> Violations:
    """Every violation of the guarantees the record, the store and the consumers show;
    ``stall_bound``: see ``quarantine_violated`` (None: stalls are not looked for).

    Assumes, as both example entities do, that a command's reply is the
    entity's new state (the default).
    """
    violations = Violations()
    histories = _Histories(app, stored, violations)
    commands = {(row.entity_id, row.command_id): row for row in stored.commands}
    _check_gapless(histories, violations)
    _check_commands(histories, commands, violations)
    _check_snapshots(histories, app, stored.snapshots, violations)
    quarantined = {(row.entity_id, row.command_id): row.status for row in stored.quarantine}
    for request in record:
        _check_request(
            request,
            histories,
            commands,
            observed,
            violations,
            quarantined=quarantined,
            record=record,
        )
    _check_effects(stored, commands, observed, violations)
    _check_origins(record, stored, commands, violations)
    _check_queries(histories, observed, violations)
    _check_timers(histories, stored.timers, violations)
    _check_projection(histories, stored, violations)
    _check_ends(app, stored, histories, commands, violations)
    _check_quarantine(record, stored, histories, commands, violations, stall_bound=stall_bound)
    for entity_id, partitions in stored.split.items():
        violations.add("split_entity", f"{entity_id}: events committed by partitions {partitions}")
    return violations
