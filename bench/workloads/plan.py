"""Seeded commands to counters: who gets which increment, in which order."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from pachyderm import Ref

from ..app import ENTITY_TYPE


@dataclass(frozen=True, slots=True)
class Call:
    """One increment, and what its reply must be if the entity applies its
    commands in the order they were sent."""

    ref: Ref
    amount: int
    command_id: str
    position: int  # 1 for the entity's first command: its version once applied
    expected_count: int  # the count once applied

    @property
    def data(self) -> dict[str, int]:
        return {"amount": self.amount}


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def plan(entities: int, increments: int, seed: int) -> list[Call]:
    """``entities`` x ``increments`` increments of random amounts (1-9), the
    entities interleaved at random; each entity's calls in its own order."""
    rng = random.Random(seed)
    refs = [Ref(ENTITY_TYPE, _uuid(rng)) for _ in range(entities)]
    order = [entity for entity in range(entities) for _ in range(increments)]
    rng.shuffle(order)
    positions = [0] * entities
    totals = [0] * entities
    calls = []
    for entity in order:
        amount = rng.randint(1, 9)
        positions[entity] += 1
        totals[entity] += amount
        calls.append(Call(refs[entity], amount, str(_uuid(rng)), positions[entity], totals[entity]))
    return calls


def finals(calls: list[Call]) -> dict[Ref, Call]:
    """Each entity's last call (its final version and count): plan order is entity order."""
    return {call.ref: call for call in calls}
