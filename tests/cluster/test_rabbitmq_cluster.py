"""The fleet on a private three-node RabbitMQ cluster: partition queues replicated on
every node with their leaders spread, and the fleet serving on through the loss of the
node leading the most of them, a node paused, and a rolling restart of every node; no
acknowledged command lost, none applied twice (the chaos checker on the stored
histories). How long the fleet took to serve again is printed for each fault (the
benchmark, ``python -m bench.cluster``, records it)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chaos.rabbitmq_cluster import RabbitMQCluster
from chaos.run import Services
from pachyderm.transport import RabbitMQTransport, Topology
from tests.chaos.scenario import assert_survives

pytestmark = [pytest.mark.cluster, pytest.mark.chaos, pytest.mark.postgres, pytest.mark.rabbitmq]

PARTITIONS = 12


@pytest.fixture
async def declared(rabbitmq_cluster: RabbitMQCluster) -> AsyncIterator[Topology]:
    topology = Topology(f"cluster_{uuid.uuid4().hex[:12]}", PARTITIONS)
    transport = RabbitMQTransport(rabbitmq_cluster.url, topology)
    await transport.start()
    try:
        yield topology
    finally:
        await transport.delete_topology()


async def test_partition_queues_are_on_every_node_with_leaders_spread(
    rabbitmq_cluster: RabbitMQCluster, declared: Topology
) -> None:
    nodes = {node.node for node in rabbitmq_cluster.nodes}
    queues = rabbitmq_cluster.queues(f"{declared.namespace}.commands.")
    assert len(queues) == PARTITIONS
    for queue in queues:
        assert queue.members == queue.online == nodes, queue
    leaders = rabbitmq_cluster.leaders(f"{declared.namespace}.commands.")
    assert set(leaders) == nodes, leaders
    # Balanced: other queues (dead letters, effects) count too, hence not exactly 4 each.
    assert max(leaders.values()) - min(leaders.values()) <= 2, leaders


@pytest.fixture
def services(rabbitmq_cluster: RabbitMQCluster, postgres_dsn: str) -> Services:
    return Services(postgres_dsn, rabbitmq_cluster.url, cluster=rabbitmq_cluster)


# One chaos run for every fault (a fleet and its checks take longer than a fault):
# (a) the node leading the most partition queues SIGKILLed, started again after 3 s;
# (b) the node leading the most paused (SIGSTOP) for 3 s, then resumed (SIGCONT);
# (c) every node stopped and started again in turn (a rolling restart of the cluster).
FAULTS = [
    "rabbitmq_leader_node_killed",
    "rabbitmq_node_paused",
    *["rabbitmq_node_restarted"] * 3,
]


async def test_the_fleet_serves_on_through_a_node_lost_paused_and_a_rolling_restart(
    tmp_path: Path, services: Services, rabbitmq_cluster: RabbitMQCluster
) -> None:
    try:
        await assert_survives(tmp_path, services, FAULTS, commands=1_000)
    except AssertionError as failed:
        # What the broker holds and says, to tell a message stuck in a queue (or held by
        # a consumer: the verdict lists the channels counting them) from one the broker
        # lost. The loss seen in sessions 17 to 20 was inboxes an interrupted assignment
        # left consuming (docs/scaling.md, "Limits known").
        raise AssertionError(f"{failed}\n{broker_account(rabbitmq_cluster)}") from None


def broker_account(cluster: RabbitMQCluster) -> str:
    """The nodes' log lines on quorum queues, leaders and partitions (the queues as they
    were before the namespace was deleted are in the verdict, ``Verdict.queues``)."""
    lines = []
    for node in cluster.nodes:
        log = node.folder / "log" / f"{node.node}.log"
        said = log.read_text(errors="replace").splitlines() if log.exists() else []
        lines.append(f"--- {node.node}: {len(said)} lines, those on queues and leaders:")
        lines += [line for line in said if _NOTED.search(line)][-60:]
    return "\n".join(lines)


_NOTED = re.compile(r"leader|quorum|partition|enqueue|dropp|lost|error", re.IGNORECASE)
