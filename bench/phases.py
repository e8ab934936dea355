"""One deployment per step of a run: the RPC and sequential calls of a system (with
its CPU per component), a drain, and the profiled RPC pass."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pachyderm import Client

from .config import SEED, WORKERS, Services, Sizes
from .cpu import CpuMeter, per_thousand, postgres_port
from .profiling import Profile, Sampler
from .systems import Deployment, System, deployed
from .workloads.checks import check_run
from .workloads.plan import plan
from .workloads.rpc import run_calls, summary

Say = Callable[[str], None]


@dataclass
class RpcPhase:
    """What one system did in workloads 1 and 2."""

    rpc: dict[str, float] = field(default_factory=dict)
    sequential: dict[str, float] = field(default_factory=dict)
    cpu_per_1000: dict[str, float] = field(default_factory=dict)
    correctness: dict[str, Any] = field(default_factory=dict)


async def _warm_up(client: Client, sizes: Sizes) -> None:
    """Connections, caches and code paths warm before anything is timed."""
    await run_calls(client, plan(max(1, sizes.warmup_calls // 5), 5, seed=SEED + 2), 32)


async def _started(deployment: Deployment) -> None:
    deployment.start_workers(WORKERS)
    await deployment.fleet.balanced()


async def rpc_phase(
    system: System, services: Services, folder: Path, sizes: Sizes, *, sequential: bool, rpc: bool
) -> RpcPhase:
    """Workload 1 (with its correctness check and CPU per component) and/or workload 2."""
    phase = RpcPhase()
    async with deployed(system, services, folder) as deployment:
        await _started(deployment)
        async with deployment.client() as client:
            await _warm_up(client, sizes)
            if rpc:
                calls = plan(sizes.rpc_entities, sizes.rpc_increments, seed=SEED)
                meter = CpuMeter(os.getpid(), deployment.worker_pids(), postgres_port(services.dsn))
                meter.start()
                result = await run_calls(client, calls, sizes.in_flight)
                phase.cpu_per_1000 = per_thousand(meter.stop(), len(calls))
                phase.rpc = summary(result)
                correctness = await check_run(
                    client,
                    calls,
                    result.replies,
                    dsn=services.dsn,
                    history_schema=system.history_schema(deployment.namespace),
                    errors=result.errors,
                )
                phase.correctness = correctness.as_dict()
            if sequential:
                one_by_one = await run_calls(client, plan(1, sizes.sequential, seed=SEED + 1), 1)
                phase.sequential = summary(one_by_one)
    return phase


async def profiled_rpc(
    system: System, services: Services, folder: Path, sizes: Sizes, py_spy: str
) -> tuple[dict[str, Profile], float, dict[str, float]]:
    """The RPC workload once more under py-spy (not one of the timed runs): profiles of
    the client and of both workers merged, the seconds it took, and the CPU seconds
    per 1,000 commands of each component meanwhile."""
    calls = plan(sizes.rpc_entities, sizes.rpc_increments, seed=SEED)
    async with deployed(system, services, folder) as deployment:
        await _started(deployment)
        async with deployment.client() as client:
            await _warm_up(client, sizes)
            pids = deployment.worker_pids()
            targets = {"client": os.getpid()}
            targets.update({f"worker{index}": pid for index, pid in enumerate(pids)})
            meter = CpuMeter(os.getpid(), pids, postgres_port(services.dsn))
            sampler = Sampler(py_spy, folder, targets)
            meter.start()
            result = await run_calls(client, calls, sizes.in_flight)
            spent = meter.stop()
            profiles = sampler.stop()
    workers = Profile()
    for label, profile in profiles.items():
        if label.startswith("worker"):
            workers.merge(profile)
    merged = {"workers": workers}
    if "client" in profiles:
        merged["client"] = profiles["client"]
    return merged, result.elapsed_s, per_thousand(spent, len(calls))
