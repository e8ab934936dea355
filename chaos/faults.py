"""The faults a chaos run injects, and how long the fleet takes to recover from each.

Injecting a fault has three steps:

1. ``start``: make it happen; returns once it has taken effect (the worker
   is dead, the socket cut, the service down), or raises :class:`FaultMissedError`.
2. ``end``: what ends it, run while the fleet recovers (resume a stalled
   worker, start a stopped service); nothing for a dead worker, which the
   others must replace on their own.
3. Recovery: from the moment the fault took effect until every probe entity
   (a counter per partition or so) answered a fresh command. Only then does
   the run restore the fleet (replace dead workers) for the next fault.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pachyderm.testing import WorkerProcess

from .fleet import ChaosFleet
from .rabbitmq_cluster import RabbitMQCluster
from .services import PrivatePostgres, PrivateRabbitMQ
from .worker import POINTS


class FaultMissedError(RuntimeError):
    """The fault did not take effect (e.g. the armed point was never reached)."""


@dataclass
class Target:
    """What faults act on: the fleet, the private services if any, and the probes."""

    fleet: ChaosFleet
    probe: Callable[[], Awaitable[None]]
    rng: random.Random
    postgres: PrivatePostgres | None = None
    rabbitmq: PrivateRabbitMQ | None = None
    cluster: RabbitMQCluster | None = None
    hold: float = 3.0  # how long a stall, an overlap or a service outage lasts

    def victim(self) -> WorkerProcess:
        live = [w for w in self.fleet.live() if w.name not in self.fleet.spares]
        return self.rng.choice(live)


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: what, when it took effect (seconds into the run), and the
    recovery it took."""

    kind: str
    at: float
    recovery_s: float
    detail: str


class Kind:
    """A kind of fault; subclasses override :meth:`start` and, when needed, :meth:`end`."""

    name = "fault"
    needs_private_postgres = False
    needs_private_rabbitmq = False
    needs_cluster = False

    async def start(self, target: Target) -> str:
        raise NotImplementedError

    async def end(self, target: Target) -> None:
        """Nothing ends a crash: the fleet recovers by itself."""


class KillAt(Kind):
    """A worker SIGKILLs itself at a point of its processing (chaos.worker)."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.name = f"kill_{point}"

    async def start(self, target: Target) -> str:
        victim = target.victim()
        if await target.fleet.kill_at(victim, self.point, timeout=20):
            return f"{victim.name} killed at {self.point}"
        if victim.process.poll() is None:
            target.fleet.order(victim, "disarm")
        raise FaultMissedError(f"{victim.name} never reached {self.point}")


class Kill(Kind):
    """SIGKILL from outside, wherever the worker happens to be."""

    name = "kill_anywhere"

    async def start(self, target: Target) -> str:
        victim = target.victim()
        await asyncio.to_thread(victim.kill)
        return f"{victim.name} killed"


class KillProjections(Kind):
    """SIGKILL the projection process (mid-batch, as likely as not); a new one takes over.

    The workers do not notice: recovery is theirs. What it tests is the read model, which
    must come out exactly once all the same (the checker's ``projection_mismatch``)."""

    name = "projections_killed"

    async def start(self, target: Target) -> str:
        live = target.fleet.live_projections()
        if not live:
            raise FaultMissedError("no projection process was running")
        victim = target.rng.choice(live)
        await asyncio.to_thread(victim.kill)
        successor = target.fleet.start_projections()
        return f"{victim.name} killed, {successor.name} started"


class CutBroker(Kind):
    """A worker's connection to the broker drops (its sockets shut down)."""

    name = "broker_connection_closed"

    async def start(self, target: Target) -> str:
        victim = target.victim()
        target.fleet.order(victim, "cut")
        await asyncio.sleep(0.2)  # the order is read in the worker's signal handler
        return f"{victim.name}'s broker connection cut"


class TerminateBackends(Kind):
    """PostgreSQL terminates a worker's sessions (store and membership pools)."""

    name = "postgres_backends_terminated"

    async def start(self, target: Target) -> str:
        victim = target.victim()
        terminated = await target.fleet.terminate_backends(victim)
        if not terminated:
            raise FaultMissedError(f"{victim.name} had no session to terminate")
        return f"{terminated} sessions of {victim.name} terminated"


class Stall(Kind):
    """A worker stops (SIGSTOP) for longer than its lease, then goes on (SIGCONT)."""

    name = "worker_stalled"

    def __init__(self) -> None:
        self._stalled: WorkerProcess | None = None

    async def start(self, target: Target) -> str:
        self._stalled = target.victim()
        target.fleet.stall(self._stalled)
        return f"{self._stalled.name} stopped for {target.hold}s"

    async def end(self, target: Target) -> None:
        await asyncio.sleep(target.hold)
        assert self._stalled is not None
        target.fleet.resume(self._stalled)


class Overlap(Kind):
    """A worker that believes it owns every partition joins the fleet for a while:
    two workers consume each partition at once."""

    name = "two_workers_one_partition"

    def __init__(self) -> None:
        self._intruder: WorkerProcess | None = None

    async def start(self, target: Target) -> str:
        self._intruder = target.fleet.start_spare(ownership="all")
        await target.fleet.serving(self._intruder)
        return f"{self._intruder.name} consumes every partition beside the fleet"

    async def end(self, target: Target) -> None:
        await asyncio.sleep(target.hold)
        assert self._intruder is not None
        await target.fleet.stop_spare(self._intruder)


class RestartPostgres(Kind):
    """The private PostgreSQL crashes (immediate shutdown) and comes back."""

    name = "postgres_restarted"
    needs_private_postgres = True

    async def start(self, target: Target) -> str:
        assert target.postgres is not None
        await asyncio.to_thread(target.postgres.crash)
        return "PostgreSQL crashed"

    async def end(self, target: Target) -> None:
        assert target.postgres is not None
        await asyncio.sleep(target.hold / 3)
        await asyncio.to_thread(target.postgres.start)


class RestartRabbitMQ(Kind):
    """The private RabbitMQ node stops and comes back."""

    name = "rabbitmq_restarted"
    needs_private_rabbitmq = True

    async def start(self, target: Target) -> str:
        assert target.rabbitmq is not None
        await asyncio.to_thread(target.rabbitmq.stop)
        return "RabbitMQ stopped"

    async def end(self, target: Target) -> None:
        assert target.rabbitmq is not None
        await asyncio.sleep(target.hold / 3)
        await asyncio.to_thread(target.rabbitmq.start)


class ClusterNodeFault(Kind):
    """A fault of one node of the private RabbitMQ cluster: the node leading the most of
    the fleet's partition queues (where a loss moves the most leaders)."""

    needs_cluster = True

    def __init__(self) -> None:
        self._node = ""  # the node the fault acts on, once started

    def _cluster(self, target: Target) -> RabbitMQCluster:
        assert target.cluster is not None
        return target.cluster

    async def _take_busiest(self, target: Target) -> str:
        """Act on the node leading the most partition queues; a line saying which."""
        prefix = f"{target.fleet.namespace}.commands."
        leaders = await asyncio.to_thread(self._cluster(target).leaders, prefix)
        self._node, led = leaders.most_common(1)[0]
        return f"{self._node} (leading {led} of {leaders.total()} partition queues)"


class KillRabbitMQNode(ClusterNodeFault):
    """SIGKILL the cluster node leading the most partition queues; it comes back later."""

    name = "rabbitmq_leader_node_killed"

    async def start(self, target: Target) -> str:
        detail = await self._take_busiest(target)
        await asyncio.to_thread(self._cluster(target).kill, self._node)
        return f"{detail} killed"

    async def end(self, target: Target) -> None:
        await asyncio.sleep(target.hold)
        await asyncio.to_thread(self._cluster(target).start_again, self._node)


class PauseRabbitMQNode(ClusterNodeFault):
    """SIGSTOP the cluster node leading the most partition queues, SIGCONT it later."""

    name = "rabbitmq_node_paused"

    async def start(self, target: Target) -> str:
        detail = await self._take_busiest(target)
        self._cluster(target).pause(self._node)
        return f"{detail} paused for {target.hold}s"

    async def end(self, target: Target) -> None:
        await asyncio.sleep(target.hold)
        self._cluster(target).resume(self._node)


class RestartRabbitMQNode(ClusterNodeFault):
    """Stop the cluster's next node in turn (a rolling restart is one per node), then
    start it again."""

    name = "rabbitmq_node_restarted"

    async def start(self, target: Target) -> str:
        cluster = self._cluster(target)
        self._node = cluster.next_in_turn()
        await asyncio.to_thread(cluster.stop, self._node)
        return f"{self._node} stopped"

    async def end(self, target: Target) -> None:
        await asyncio.sleep(target.hold / 3)
        await asyncio.to_thread(self._cluster(target).start_again, self._node)


def kinds() -> dict[str, Callable[[], Kind]]:
    """Every kind of fault by name (a factory each: some kinds keep state per injection)."""
    factories: dict[str, Callable[[], Kind]] = {
        f"kill_{point}": functools.partial(KillAt, point) for point in POINTS
    }
    others: tuple[type[Kind], ...] = (
        Kill,
        KillProjections,
        CutBroker,
        TerminateBackends,
        Stall,
        Overlap,
        RestartPostgres,
        RestartRabbitMQ,
        KillRabbitMQNode,
        PauseRabbitMQNode,
        RestartRabbitMQNode,
    )
    factories.update((kind.name, kind) for kind in others)
    return factories


def available(target: Target) -> list[str]:
    """The kinds ``target`` supports: restarts only of private services."""
    found = []
    for name, factory in kinds().items():
        kind = factory()
        if kind.needs_private_postgres and target.postgres is None:
            continue
        if kind.needs_private_rabbitmq and target.rabbitmq is None:
            continue
        if kind.needs_cluster and target.cluster is None:
            continue
        found.append(name)
    return found


async def inject(target: Target, name: str, clock: Callable[[], float]) -> Fault:
    """Inject one fault of kind ``name``; returns it with its recovery time.

    Raises :class:`FaultMissedError` when it did not take effect. ``clock`` gives the
    run's time, for the record.
    """
    kind = kinds()[name]()
    detail = await kind.start(target)
    # When it took effect, not when it was asked for: a cluster node's fault first asks
    # the cluster which node leads the most queues, which can take seconds.
    at, effective = clock(), time.monotonic()
    ending = asyncio.create_task(kind.end(target))
    try:
        await target.probe()
        recovery = time.monotonic() - effective
    finally:
        await ending
    return Fault(name, at, recovery, detail)
