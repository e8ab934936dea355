"""The correctness check of the RPC workload: replies, final states and histories.

A fast system that loses or reorders a command is no result at all, so every
RPC run ends with these, for all three systems alike:

- every reply exact: the ``i``-th command of an entity must come back as
  version ``i`` with the sum of the first ``i`` amounts (which also proves
  per-entity order: the commands of an entity apply in the order they were sent);
- every final state exact, read back through the protocol's query;
- the stored histories (where there are any) gapless, each event carrying its
  command id and amount in the order the commands were sent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgpack

from pachyderm import Client, PachydermError

from .plan import Call, finals

SHOWN_PROBLEMS = 5
_QUERY_CONCURRENCY = 64


@dataclass
class Correctness:
    """What was checked, and the first problems found (none: correct)."""

    replies: int = 0
    final_states: int = 0
    histories: int | None = None  # None: the system keeps none
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0 and self.replies > 0

    def add(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < SHOWN_PROBLEMS:
            self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "replies_checked": self.replies,
            "final_states_checked": self.final_states,
            "histories_checked": self.histories,
            "problems": self.problem_count,
            "first_problems": self.problems,
        }


def check_replies(
    calls: list[Call], replies: dict[str, tuple[int, Any]], found: Correctness
) -> None:
    for call in calls:
        got = replies.get(call.command_id)
        wanted = (call.position, {"count": call.expected_count})
        if got != wanted:
            found.add(f"{call.ref.id} command {call.position}: replied {got}, expected {wanted}")
        found.replies += 1


async def check_final_states(client: Client, calls: list[Call], found: Correctness) -> None:
    gate = asyncio.Semaphore(_QUERY_CONCURRENCY)

    async def check(last: Call) -> None:
        async with gate:
            try:
                got = await client.request(last.ref, "", None, kind="query", timeout=60)
            except PachydermError as error:
                found.add(f"{last.ref.id}: query failed: {error!r}")
                return
        wanted = (last.position, {"count": last.expected_count})
        if got != wanted:
            found.add(f"{last.ref.id}: final state {got}, expected {wanted}")
        found.final_states += 1

    await asyncio.gather(*(check(last) for last in finals(calls).values()))


async def check_histories(dsn: str, schema: str, calls: list[Call], found: Correctness) -> None:
    wanted: dict[uuid.UUID, list[tuple[int, str, str, int]]] = defaultdict(list)
    for call in calls:
        wanted[call.ref.id].append((call.position, "Increased", call.command_id, call.amount))
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            f'SELECT entity_id, version, name, data, command_id FROM "{schema}".events'
            " WHERE entity_id = ANY($1::uuid[]) ORDER BY entity_id, version",
            list(wanted),
        )
    finally:
        await connection.close()
    stored: dict[uuid.UUID, list[tuple[int, str, str, int]]] = defaultdict(list)
    for row in rows:
        amount = msgpack.unpackb(row["data"]).get("amount")
        stored[row["entity_id"]].append((row["version"], row["name"], row["command_id"], amount))
    for entity_id, events in wanted.items():
        if stored.get(entity_id, []) != events:
            found.add(f"{entity_id}: history {stored.get(entity_id)}, expected {events}")
    found.histories = len(wanted)


async def check_run(
    client: Client,
    calls: list[Call],
    replies: dict[str, tuple[int, Any]],
    *,
    dsn: str,
    history_schema: str | None,
    errors: list[str],
) -> Correctness:
    """Every check for one run of ``calls``; ``errors`` are the calls that raised."""
    found = Correctness()
    for error in errors:
        found.add(error)
    check_replies(calls, replies, found)
    await check_final_states(client, calls, found)
    if history_schema is not None:
        await check_histories(dsn, history_schema, calls, found)
    return found
