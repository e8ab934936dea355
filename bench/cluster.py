"""The fleet on a three-node RabbitMQ cluster against one node, and failover on node loss.

    python -m bench.cluster [--quick]

Both brokers are private, started the same way (chaos.services.PrivateRabbitMQ:
RabbitMQ from this machine's install, loopback, the consistent-hash plugin, no
management, ``queue_leader_locator = balanced``), one after the other so that
only one runs at a time: one node on port 5764, then the cluster of
chaos.rabbitmq_cluster on 5761-5763 with ``PACHYDERM_AMQP_URL`` listing all
three (each process connects to one at random). PostgreSQL is the benchmark's
usual one (``PACHYDERM_BENCH_DATABASE_URL``). On each broker, two workers:

- RPC: bench's workload 1 (counters, random increments, 256 in flight through
  ``pachyderm.Client``, the correctness check) at this benchmark's size;
- drain: bench's workload 3 (commands waiting in the partition queues, then
  the workers start), at this benchmark's size.

Then failover on the cluster: a chaos run (chaos.run, two workers, a client
and raw callers under load) with each fault in turn: the node leading the most
partition queues SIGKILLed (started again 3 s later), the node leading the
most paused (SIGSTOP) for 3 s, and every node stopped and started in turn. For
each, the seconds from the fault until every probe entity answered a fresh
command, and the chaos checker's verdict (nothing lost, nothing applied twice).

One run on a machine other helpers load: the load average is recorded beside
the figures. Results under ``scale`` -> ``rabbitmq_cluster`` of
bench/results.json (every other key kept) and in the section "Scale: RabbitMQ
cluster" of bench/results.md; ``--quick`` writes neither.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from chaos.rabbitmq_cluster import RabbitMQCluster
from chaos.run import Options, chaos_run
from chaos.run import Services as ChaosServices
from chaos.services import PrivateRabbitMQ, ServiceUnavailableError

from .config import Services, Sizes
from .phases import rpc_phase
from .run import say
from .standalone import write
from .systems import PACHYDERM, SYSTEMS
from .workloads.drain import drain

KEY = ("scale", "rabbitmq_cluster")
SECTION = "## Scale: RabbitMQ cluster"
SINGLE_PORT, SINGLE_DIST_PORT = 5764, 25764
SIZES = Sizes(rpc_entities=500, rpc_increments=10, drain_commands=20_000, drain_entities=2_000)
QUICK = Sizes(rpc_entities=50, rpc_increments=4, drain_commands=1_000, drain_entities=100)
FAULTS = {
    "leader_node_killed": ["rabbitmq_leader_node_killed"],
    "node_paused": ["rabbitmq_node_paused"],
    "rolling_restart": ["rabbitmq_node_restarted"] * 3,
}


@asynccontextmanager
async def one_node() -> AsyncIterator[str]:
    """A private single node, started as the cluster's nodes are; its URL."""
    folder = Path(tempfile.mkdtemp(prefix="pachyderm-one-node-"))
    node = PrivateRabbitMQ(
        folder,
        node="pachy-s1@localhost",
        port=SINGLE_PORT,
        dist_port=SINGLE_DIST_PORT,
        config="queue_leader_locator = balanced\n",
    )
    try:
        await asyncio.to_thread(node.start)
        yield node.url
    finally:
        await asyncio.to_thread(node.stop)
        shutil.rmtree(folder, ignore_errors=True)


@asynccontextmanager
async def three_nodes() -> AsyncIterator[RabbitMQCluster]:
    cluster = RabbitMQCluster()
    await asyncio.to_thread(cluster.start)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.close)


async def throughput(services: Services, folder: Path, sizes: Sizes) -> dict[str, Any]:
    """RPC and drain of two workers on ``services``."""
    system = SYSTEMS[PACHYDERM]
    phase = await rpc_phase(system, services, folder, sizes, sequential=False, rpc=True)
    say(f"  rpc: {phase.rpc['per_s']:,.0f}/s, correct: {phase.correctness['ok']}")
    drained = await drain(
        system, services, folder, sizes=sizes, workers=("w1", "w2"), say=lambda _: None
    )
    say(f"  drain: {drained.per_s:,.0f}/s (steady {drained.steady_per_s:,.0f}/s)")
    return {
        "rpc_per_s": round(phase.rpc["per_s"], 1),
        "rpc_p50_ms": round(phase.rpc["p50_ms"], 2),
        "rpc_p99_ms": round(phase.rpc["p99_ms"], 2),
        "rpc_correct": bool(phase.correctness["ok"]),
        "drain_per_s": round(drained.per_s, 1),
        "drain_steady_per_s": round(drained.steady_per_s, 1),
        "drain_exact": drained.exact,
    }


async def failovers(
    cluster: RabbitMQCluster, dsn: str, folder: Path, commands: int
) -> dict[str, Any]:
    """Each fault of :data:`FAULTS` in a chaos run of its own; recoveries and verdicts."""
    found: dict[str, Any] = {}
    services = ChaosServices(dsn, cluster.url, cluster=cluster)
    for name, faults in FAULTS.items():
        (folder / name).mkdir()
        try:
            async with chaos_run(folder / name, services, Options()) as run:
                await run.setup()
                await run.scenario(commands, faults)
                verdict = await run.finish()
        except ServiceUnavailableError as error:  # a node did not come back: say so, go on
            found[name] = {"error": str(error)[:500]}
            say(f"  {name}: FAILED: {str(error)[:200]}")
            continue
        recoveries = [round(fault.recovery_s, 2) for fault in run.faults]
        found[name] = {
            "recovery_s": recoveries,
            "faults": [fault.detail for fault in run.faults],
            "missed": run.missed,
            "checker_clean": verdict.violations.clean,
            "unanswered": verdict.unanswered,
            "commands": len(run.record),
        }
        say(f"  {name}: serving again after {recoveries} s, clean: {verdict.violations.clean}")
    return found


async def measure(dsn: str, sizes: Sizes, chaos_commands: int) -> dict[str, Any]:
    load_before = os.getloadavg()
    began = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="pachyderm-bench-cluster-"))
    data: dict[str, Any] = {}
    try:
        say("one node (private, port 5764)")
        async with one_node() as url:
            data["one_node"] = await throughput(Services(dsn, url), folder, sizes)
        say("three nodes (private cluster, ports 5761-5763)")
        async with three_nodes() as cluster:
            data["three_nodes"] = await throughput(Services(dsn, cluster.url), folder, sizes)
            data["failover"] = await failovers(cluster, dsn, folder, chaos_commands)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    data["sizes"] = {
        "rpc_calls": sizes.rpc_entities * sizes.rpc_increments,
        "in_flight": sizes.in_flight,
        "drain_commands": sizes.drain_commands,
        "chaos_commands": chaos_commands,
        "workers": 2,
        "partitions": 16,
    }
    data["load_average"] = {
        "before": [round(value, 2) for value in load_before],
        "after": [round(value, 2) for value in os.getloadavg()],
    }
    data["cores"] = os.cpu_count()
    data["seconds"] = round(time.monotonic() - began, 1)
    return data


def _ratio(data: dict[str, Any], metric: str) -> str:
    return f"{data['three_nodes'][metric] / data['one_node'][metric]:.2f}x"


def section(data: dict[str, Any], command: str) -> str:
    one, three = data["one_node"], data["three_nodes"]
    lines = [
        SECTION,
        "",
        f"`{command}`: two workers, 16 partitions, this machine's PostgreSQL; both brokers"
        " private (started the same way, one at a time), RabbitMQ 3.10 on this machine's"
        f" {data['cores']} cores. Load average (1, 5, 15 min) before"
        f" {data['load_average']['before']}, after {data['load_average']['after']}:"
        " other work ran meanwhile, re-run on a quiet machine.",
        "",
        "| | one node | three nodes | three / one |",
        "|---|---:|---:|---:|",
    ]
    for label, metric in [
        ("RPC, calls/s", "rpc_per_s"),
        ("RPC p50, ms", "rpc_p50_ms"),
        ("RPC p99, ms", "rpc_p99_ms"),
        ("drain, commands/s", "drain_per_s"),
        ("drain steady, commands/s", "drain_steady_per_s"),
    ]:
        lines.append(f"| {label} | {one[metric]:,} | {three[metric]:,} | {_ratio(data, metric)} |")
    lines += [
        "",
        f"RPC correct: one node {one['rpc_correct']}, three {three['rpc_correct']}; drain"
        f" exact: {one['drain_exact']}, {three['drain_exact']}. Sizes: {data['sizes']}.",
        "",
        "Failover on the cluster (chaos run under load; seconds from the fault until every"
        " probe answered a fresh command; the checker compares every answer with the stored"
        " histories):",
        "",
        "| fault | serving again after, s | requests recorded | checker |",
        "|---|---|---:|---|",
    ]
    for name, found in data["failover"].items():
        if "error" in found:
            lines.append(f"| {name} | failed: {found['error'][:120]} | | |")
            continue
        verdict = "clean" if found["checker_clean"] and not found["unanswered"] else "FOUND"
        recoveries = ", ".join(f"{value:.2f}" for value in found["recovery_s"])
        lines.append(f"| {name} | {recoveries} | {found['commands']:,} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, no files written")
    parser.add_argument("--database-url", help="default: PACHYDERM_BENCH_DATABASE_URL, local")
    arguments = parser.parse_args(argv)
    dsn = Services.from_environment(arguments.database_url).dsn
    sizes, chaos_commands = (QUICK, 300) if arguments.quick else (SIZES, 1_500)
    data = asyncio.run(measure(dsn, sizes, chaos_commands))
    command = shlex.join(
        ["python", "-m", "bench.cluster", *(["--quick"] if arguments.quick else [])]
    )
    data["command"] = command
    if not arguments.quick:
        write(KEY, SECTION, data, section(data, command))
    print(section(data, command))
    failed = [name for name, found in data["failover"].items() if not found.get("checker_clean")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
