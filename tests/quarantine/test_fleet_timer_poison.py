"""A poison timer on the real fleet (worker processes, RabbitMQ, PostgreSQL): a timer
whose command kills its worker process (``os._exit``) takes down the worker that fires
it first; the next owner of its partition finds it due from before it began (risky),
counts each try before it runs and decides it in a forked child first (see
pachyderm.worker._timer_poison), so the next tries kill children, not workers, until it
is held after PACHYDERM_MAX_ATTEMPTS (3): one worker died, no more. The fleet serves the
other lanes, and the poisoned lane's own commands, meanwhile; once the fix is deployed
(the switch file removed), an operator's ``pachyderm timers release`` lets it fire,
once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from pachyderm.store import PostgresEventStore, StoredTimer
from pachyderm.testing import ProcessFleet

from .poison_app import Arm, Lane, Poison, Step
from .test_fleet_quarantine import Supervisor, eventually, pachyderm_cli, steps

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def test_a_timer_that_kills_its_workers_is_held_then_released(
    fleet: ProcessFleet, tmp_path: Path
) -> None:
    switch = tmp_path / "poisoned"
    switch.touch()
    supervisor = Supervisor(fleet)
    for _ in range(2):
        supervisor.start()
    await fleet.balanced()
    supervising = asyncio.create_task(supervisor.run())
    lane = Lane.ref("poison-timer")
    store = await PostgresEventStore.connect(fleet.dsn, schema=fleet.topology.namespace)
    try:

        async def timer() -> StoredTimer | None:
            found = await store.entity_timers(lane.id)
            return found[0] if found else None

        async def held() -> bool:
            found = await timer()
            return found is not None and found.held

        async with fleet.client() as client:
            armed = Arm(Poison("exit", str(switch)), 0.5)
            assert await client.call(lane, armed, timeout=30) == {"steps": [0]}
            await eventually(held, timeout=150)
            assert supervisor.exits == [3]  # the first owner; its next tries ended children
            inspected = await pachyderm_cli(fleet, "inspect", "lane", str(lane.id), "--json")
            assert [(t["key"], t["held"]) for t in inspected["timers"]] == [("Poison", True)]
            # The others flow; so do the poisoned lane's own commands.
            for n in range(20):
                assert await client.call(Lane.ref(f"healthy-{n}"), Step(n), timeout=30)
            assert await client.call(lane, Step(5), timeout=30) == {"steps": [0, 5]}

            os.remove(switch)  # the fix deployed
            released = await pachyderm_cli(
                fleet, "timers", "release", "lane", str(lane.id), "Poison"
            )
            assert released == {"entity": str(lane), "timer": "Poison", "released": True}

            async def fired() -> bool:
                return await steps(client, lane) == [0, 5, -1]

            await eventually(fired)
            assert await timer() is None
            assert supervisor.exits == [3]
    finally:
        supervising.cancel()
        await asyncio.gather(supervising, return_exceptions=True)
        await store.close()
