"""Workload 4: SIGKILL one of two workers under load; seconds until its partitions'
commands are committed again.

While a steady load of calls runs, one worker is killed; at once, probe
commands go to fresh entities spread over all partitions (fire-and-forget,
each with a known command id). The time is the moment the last probe is in
the ``commands`` table (polled every 10 ms): the probes that landed on the
dead worker's partitions wait until the survivor has noticed the death
(``PACHYDERM_DEAD_AFTER``), taken the partitions over and worked through what
queued up meanwhile. After each trial a replacement worker joins under the
dead one's name and the fleet rebalances before the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from examples.counter import Increment
from pachyderm import Client, PachydermError, Ref

from ..app import COMMAND, ENTITY_TYPE
from ..config import WORKERS, Services, Sizes
from ..systems import PACHYDERM, SYSTEMS, Deployment, deployed

POLL_INTERVAL = 0.01
LOAD_ENTITIES = 1_000
UNDER_LOAD_BEFORE_KILL = 1.0
RECOVERY_TIMEOUT = 60.0
ERROR_PAUSE = 0.05
Say = Callable[[str], None]


async def steady_load(client: Client, in_flight: int, seed: int, errors: list[str]) -> None:
    """Increments to random counters with ``in_flight`` waiting, until cancelled; the
    calls that failed go to ``errors``."""
    rng = random.Random(seed)
    refs = [Ref(ENTITY_TYPE, uuid.UUID(int=rng.getrandbits(128))) for _ in range(LOAD_ENTITIES)]

    async def caller() -> None:
        while True:
            try:
                await client.call_named(rng.choice(refs), COMMAND, {"amount": 1}, timeout=30)
            except PachydermError as error:
                errors.append(repr(error))
                # A call can fail without ever waiting: never spin the event loop.
                await asyncio.sleep(ERROR_PAUSE)

    await asyncio.gather(*(caller() for _ in range(in_flight)))


async def committed_count(deployment: Deployment, probes: list[tuple[Ref, str]]) -> int:
    return int(
        await deployment.fetchval(
            f'SELECT count(*) FROM "{deployment.namespace}".commands'
            " WHERE entity_id = ANY($1::uuid[]) AND command_id = ANY($2::text[])",
            [ref.id for ref, _ in probes],
            [command_id for _, command_id in probes],
        )
    )


async def one_trial(
    deployment: Deployment, client: Client, sizes: Sizes, trial: int, say: Say
) -> float:
    errors: list[str] = []
    load = asyncio.create_task(
        steady_load(client, sizes.failover_load_in_flight, seed=trial, errors=errors)
    )
    try:
        await asyncio.sleep(UNDER_LOAD_BEFORE_KILL)
        victim = deployment.fleet.live()[trial % len(WORKERS)]
        victim.kill()
        killed = time.monotonic()
        probes = [
            (Ref(ENTITY_TYPE, uuid.uuid4()), str(uuid.uuid4()))
            for _ in range(sizes.failover_probes)
        ]
        await asyncio.wait_for(
            asyncio.gather(
                *(client.send(ref, Increment(amount=1), command_id=cid) for ref, cid in probes)
            ),
            RECOVERY_TIMEOUT,
        )
        while await committed_count(deployment, probes) < len(probes):
            if time.monotonic() - killed > RECOVERY_TIMEOUT:
                raise TimeoutError(f"probes not committed {RECOVERY_TIMEOUT} s after the kill")
            await asyncio.sleep(POLL_INTERVAL)
        recovered = time.monotonic() - killed
    finally:
        load.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await load
    if errors:
        say(f"failover trial {trial + 1}: {len(errors)} load calls failed, first: {errors[0]}")
    deployment.restart_worker(victim.name, WORKERS)
    await deployment.fleet.balanced(timeout=30)
    return recovered


async def failover(services: Services, folder: Path, sizes: Sizes, say: Say) -> list[float]:
    """Seconds to recover, one per trial."""
    async with deployed(SYSTEMS[PACHYDERM], services, folder) as deployment:
        deployment.start_workers(WORKERS)
        await deployment.fleet.balanced()
        async with deployment.client() as client:
            recoveries = []
            for trial in range(sizes.failover_trials):
                recoveries.append(await one_trial(deployment, client, sizes, trial, say))
                say(f"failover trial {trial + 1}/{sizes.failover_trials}: {recoveries[-1]:.2f} s")
            return recoveries
