"""Workload 6: a worker's resident memory with 100,000 counters in its cache.

One worker process serves every partition. First a burst of commands to a
few counters warms it up (connections, buffers full of prefetched deliveries,
the allocator's pools), then its idle resident set is read from
``/proc/<pid>/status``; then one command to each of 100,000 new counters, sent
fire-and-forget, and once all are committed the resident set again. The
difference per counter is what a cached small entity costs in the real
process (allocator slack included); :func:`cache_bytes_per_entity` gives the
cache's own share, measured with tracemalloc in this process.
"""

from __future__ import annotations

import gc
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path

from pachyderm import Ref
from pachyderm.worker import EntityCache

from ..app import ENTITY_TYPE
from ..config import Services, Sizes
from ..systems import PACHYDERM, SYSTEMS, deployed
from .drain import Say, publish, wait_committed
from .plan import plan

KIB = 1024
MIB = 1024 * 1024
WARMUP_ENTITIES = 100


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    raise LookupError(f"no VmRSS for process {pid}")


@dataclass(frozen=True)
class MemoryResult:
    idle_rss_mib: float
    loaded_rss_mib: float
    entities: int

    @property
    def bytes_per_entity(self) -> float:
        return (self.loaded_rss_mib - self.idle_rss_mib) * MIB / self.entities


async def memory(services: Services, folder: Path, sizes: Sizes, say: Say) -> MemoryResult:
    warmup = plan(WARMUP_ENTITIES, max(1, sizes.memory_warmup_commands // WARMUP_ENTITIES), seed=5)
    counters = plan(sizes.memory_entities, 1, seed=6)
    async with deployed(SYSTEMS[PACHYDERM], services, folder) as deployment:
        (worker,) = deployment.start_workers(["w1"])
        await deployment.fleet.balanced()
        async with deployment.client() as client:
            await publish(client, warmup, say)
            await wait_committed(deployment, len(warmup), timeout=300)
            idle = resident_bytes(worker.process.pid)
            await publish(client, counters, say)
            await wait_committed(deployment, len(warmup) + len(counters), timeout=600)
        loaded = resident_bytes(worker.process.pid)
    return MemoryResult(idle / MIB, loaded / MIB, len(counters))


def cache_bytes_per_entity(entities: int) -> float:
    """Bytes the worker's cache structures take per counter state ``{"count": n}``
    (reference, uuid, cache entry, state dict), by tracemalloc in this process."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = EntityCache(capacity=entities)
    for number in range(entities):
        cache.put(Ref(ENTITY_TYPE, uuid.uuid4()), {"count": number + 1000}, 1)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del cache
    return (after - before) / entities
