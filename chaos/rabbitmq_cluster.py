"""A private RabbitMQ cluster on loopback, for tests and benchmarks that lose nodes.

Three nodes (by default) ``pachy-c1@localhost``... each a
:class:`~chaos.services.PrivateRabbitMQ` in a folder of its own under one
temporary folder, sharing an Erlang cookie of the cluster's own, with the
consistent-hash plugin and without management. AMQP ports from 5761 and
distribution ports from 25761 (the range given to these tests: never the
machine's broker at 5672/25672, whose node is never addressed). The nodes start
in parallel (each takes seconds), then the others join the first.

:attr:`RabbitMQCluster.url` lists every node's address, separated by commas,
as ``PACHYDERM_AMQP_URL`` takes them. :meth:`close` stops every node and
removes the folder.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import socket
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from .services import PrivateRabbitMQ, ServiceUnavailableError

FIRST_PORT = 5761
FIRST_DIST_PORT = 25761
# The partition queues' leaders go to the node with the fewest, whatever node a
# client declares them on (RabbitMQ 3.10+; queues may also say it themselves).
_CONFIG = "queue_leader_locator = balanced\n"


class Replicas(NamedTuple):
    """A quorum queue's nodes: its leader, its members, and those of them online."""

    name: str
    leader: str
    members: frozenset[str]
    online: frozenset[str]


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class RabbitMQCluster:
    """``size`` private RabbitMQ nodes joined in one cluster; see the module."""

    def __init__(
        self,
        size: int = 3,
        *,
        name: str = "pachy-c",
        first_port: int = FIRST_PORT,
        first_dist_port: int = FIRST_DIST_PORT,
    ) -> None:
        ports = [first_port + i for i in range(size)]
        dist_ports = [first_dist_port + i for i in range(size)]
        if taken := [port for port in ports + dist_ports if _port_taken(port)]:
            raise ServiceUnavailableError(f"ports {taken} are taken: another cluster runs?")
        self.folder = Path(tempfile.mkdtemp(prefix="pachyderm-cluster-"))
        cookie = secrets.token_hex(20)
        names = [f"{name}{number}@localhost" for number in range(1, size + 1)]
        # The nodes find each other as they boot (no join_cluster one after the other).
        peers = "".join(
            f"cluster_formation.classic_config.nodes.{number} = {peer}\n"
            for number, peer in enumerate(names, 1)
        )
        config = f"{_CONFIG}cluster_formation.peer_discovery_backend = classic_config\n{peers}"
        self.nodes: list[PrivateRabbitMQ] = []
        for node_name, port, dist_port in zip(names, ports, dist_ports, strict=True):
            folder = self.folder / node_name.split("@")[0]
            folder.mkdir()
            node = PrivateRabbitMQ(
                folder,
                node=node_name,
                port=port,
                dist_port=dist_port,
                cookie=cookie,
                config=config,
            )
            self.nodes.append(node)
        self.down: set[str] = set()  # nodes stopped or killed by the test, by name
        self._turns = 0

    @property
    def url(self) -> str:
        """Every node's AMQP URL, separated by commas."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> PrivateRabbitMQ:
        return next(node for node in self.nodes if node.node == name)

    def start(self) -> None:
        """Start every node at once; they form one cluster as they boot (a node that
        formed one of its own instead joins the first's)."""
        try:
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                list(pool.map(PrivateRabbitMQ.start, self.nodes))
            for node in self._outside():
                # Booted before it could see the others (a cluster of its own): join.
                node.ctl("stop_app")
                node.ctl("reset")
                node.ctl("join_cluster", self.nodes[0].node)
                node.ctl("start_app")
            if outside := self._outside():
                raise ServiceUnavailableError(f"{[n.node for n in outside]} did not join")
        except BaseException:
            self.close()
            raise

    def _outside(self) -> list[PrivateRabbitMQ]:
        """The nodes the first node does not see running in its cluster."""
        status = json.loads(self.nodes[0].ctl("cluster_status", "--formatter", "json"))
        return [node for node in self.nodes if node.node not in status["running_nodes"]]

    def live(self) -> list[PrivateRabbitMQ]:
        return [node for node in self.nodes if node.node not in self.down]

    def ctl(self, *arguments: str) -> str:
        """rabbitmqctl on the first live node (cluster-wide commands)."""
        return self.live()[0].ctl(*arguments)

    def queues(self, prefix: str) -> list[Replicas]:
        """Where the quorum queues whose name starts with ``prefix`` are."""
        listed = self.ctl(
            "list_queues", "name", "leader", "members", "online", "--formatter", "json", "-q"
        )
        return [
            Replicas(row["name"], row["leader"], *map(frozenset, (row["members"], row["online"])))
            for row in json.loads(listed or "[]")
            if row["name"].startswith(prefix)
        ]

    def leaders(self, prefix: str) -> Counter[str]:
        """How many of the queues named ``prefix...`` each node leads."""
        return Counter(queue.leader for queue in self.queues(prefix))

    def next_in_turn(self) -> str:
        """The next node of a rolling restart: the first, the second... round again."""
        node = self.nodes[self._turns % len(self.nodes)].node
        self._turns += 1
        return node

    def kill(self, name: str) -> None:
        """SIGKILL a node's Erlang VM, as a crash would."""
        self.node(name).send_signal(signal.SIGKILL)
        self.down.add(name)

    def stop(self, name: str) -> None:
        """Stop a node cleanly (it hands its leaders over first)."""
        self.down.add(name)
        self.node(name).stop()

    def start_again(self, name: str) -> None:
        """Start a stopped or killed node: it rejoins the cluster from its own data."""
        node = self.node(name)
        node.kill()  # what is left of a killed VM (its child): only ours
        node.start()
        self.down.discard(name)

    def pause(self, name: str) -> None:
        self.node(name).send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.node(name).send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop every node (at once) and remove the folder."""
        for node in self.nodes:  # a paused node would never stop
            with contextlib.suppress(ServiceUnavailableError):
                node.send_signal(signal.SIGCONT)
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(PrivateRabbitMQ.stop, self.nodes))
        shutil.rmtree(self.folder, ignore_errors=True)
