"""The quarantine port: attempts of commands, quarantined commands, parked commands.

Invariants every backend keeps (checked by :class:`~pachyderm.testing.QuarantineStoreContract`):

* ``count_attempts`` adds one to each key's count in one statement and returns
  the new counts; ``forget_attempts`` deletes them (a command answered at last).
* A command is quarantined once per (entity, command id): quarantining it again
  (another owner racing) keeps the first row's policy and time and its status
  unless that was ``resuming`` (the resumed command failed again: back to
  ``quarantined``).
* Parked commands come back in the order they were parked; parking a command
  id already parked for the entity replaces its message and keeps its place.
* An operator's decision moves a ``quarantined`` row only: ``resume`` to
  ``resuming``, ``skip`` to ``skipping``; any other row (or none) is refused
  with :class:`NotQuarantinedError`; a resumed command's attempts start over
  from 0. The partition's owner then carries it out
  and calls ``settle``: a resumed row is deleted, a skipped one stays
  ``skipped`` (a copy of the command is answered ``quarantined``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from .._errors import PachydermError

Policy = Literal["park", "skip"]
"""park: the entity's later commands wait until an operator decides; skip: they run."""
Status = Literal["quarantined", "resuming", "skipping", "skipped"]
Decision = Literal["resume", "skip"]
POLICIES: tuple[Policy, ...] = ("park", "skip")
DECISIONS: tuple[Decision, ...] = ("resume", "skip")

CommandKey = tuple[uuid.UUID, str]
"""(entity id, command id)."""


class NotQuarantinedError(PachydermError):
    """No command waiting for an operator's decision has this entity id and command id."""


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A quarantined command: ``message`` is the command as received (see the worker's
    quarantine for its encoding); ``parked``: later commands of its entity waiting."""

    entity_id: uuid.UUID
    command_id: str
    entity_type: str
    partition: int
    policy: Policy
    status: Status
    attempts: int
    reason: str
    message: bytes
    quarantined_at: datetime | None = None
    decided_at: datetime | None = None
    parked: int = 0


@dataclass(frozen=True, slots=True)
class Parked:
    """A later command of a parked entity; ``position`` orders the entity's commands."""

    entity_id: uuid.UUID
    command_id: str
    message: bytes
    position: int = 0


@runtime_checkable
class QuarantineStore(Protocol):
    """Where a namespace keeps its poison commands (the database: every worker sees it)."""

    async def attempts(self, keys: Sequence[CommandKey]) -> dict[CommandKey, int]:
        """The attempts counted of these keys (those with none are left out)."""
        ...

    async def count_attempts(self, keys: Sequence[CommandKey]) -> dict[CommandKey, int]:
        """Add one to the attempts of each (distinct) key; their counts now."""
        ...

    async def forget_attempts(self, keys: Sequence[CommandKey]) -> None:
        """Delete the attempts of these keys (their commands were answered)."""
        ...

    async def quarantine(self, entries: Sequence[Quarantined]) -> None:
        """Record these commands as quarantined (status and times are the store's)."""
        ...

    async def quarantined(
        self, *, partitions: Sequence[int] | None = None, limit: int = 1000
    ) -> list[Quarantined]:
        """The quarantine's rows (of ``partitions`` if given), oldest first, each with
        its count of parked commands."""
        ...

    async def find(self, entity_id: uuid.UUID, command_id: str) -> Quarantined | None:
        """One quarantined command, or None."""
        ...

    async def decide(
        self, entity_id: uuid.UUID, command_id: str, decision: Decision
    ) -> Quarantined:
        """An operator's decision on a ``quarantined`` command; the row as it is now."""
        ...

    async def settle(self, entity_id: uuid.UUID, command_id: str) -> None:
        """The owner carried a decision out: a resuming row goes, a skipping one is
        ``skipped``."""
        ...

    async def park(self, commands: Sequence[Parked]) -> None:
        """Keep these commands aside, in this order, after those parked before."""
        ...

    async def parked(self, entity_id: uuid.UUID, limit: int) -> list[Parked]:
        """The entity's parked commands, first parked first, at most ``limit``."""
        ...

    async def unpark(self, positions: Sequence[int]) -> None:
        """Delete these parked commands (they ran)."""
        ...


@runtime_checkable
class HasQuarantine(Protocol):
    """A store that keeps a quarantine (both shipped backends do)."""

    def quarantine_store(self) -> QuarantineStore: ...


def check_decision(decision: str) -> Decision:
    """``decision`` if it is one, else :class:`ValueError` naming the choices."""
    for known in DECISIONS:
        if decision == known:
            return known
    raise ValueError(f"a quarantined command is resumed or skipped, not {decision!r}")


def check_policy(policy: str) -> Policy:
    """``policy`` if it is one, else :class:`ValueError` naming the choices."""
    for known in POLICIES:
        if policy == known:
            return known
    raise ValueError(f"the quarantine policy is park or skip, not {policy!r}")


def distinct_parked(commands: Sequence[Parked]) -> list[Parked]:
    """One per (entity, command id): a later copy's message in the first copy's place."""
    kept: dict[CommandKey, Parked] = {}
    for command in commands:
        kept[(command.entity_id, command.command_id)] = command
    return list(kept.values())


def row_of(entry: Quarantined) -> tuple[Any, ...]:
    """What a backend writes of a new quarantine row, in the migration's column order
    (entity id, command id, entity type, partition, policy, attempts, reason, message)."""
    return (
        entry.entity_id,
        entry.command_id,
        entry.entity_type,
        entry.partition,
        entry.policy,
        entry.attempts,
        entry.reason,
        entry.message,
    )
