"""deploy/k8s/keda.yaml: the workers scale on the real partition queues, never past them.

KEDA's custom resources have no bundled schema, so they are checked field by
field against what KEDA's rabbitmq scaler accepts and against the names
Pachyderm's topology really declares.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pachyderm.transport import Topology

from .manifests import K8S, Resource, config_map_data, find, mapping, of_kind, render, sequence

KEDA = "keda.sh/v1alpha1"


@pytest.fixture
def resources() -> list[Resource]:
    return render()


@pytest.fixture
def scaled_object(resources: list[Resource]) -> Resource:
    (scaled,) = of_kind(resources, "ScaledObject")
    assert scaled["apiVersion"] == KEDA
    return scaled


@pytest.fixture
def trigger(scaled_object: Resource) -> Resource:
    (only,) = sequence(scaled_object["spec"]["triggers"], "triggers")
    return mapping(only, "trigger")


@pytest.fixture
def topology(resources: list[Resource]) -> Topology:
    data = config_map_data(resources)
    return Topology(data["PACHYDERM_NAMESPACE"], int(data["PACHYDERM_PARTITIONS"]))


def test_it_scales_the_workers_deployment(
    resources: list[Resource], scaled_object: Resource
) -> None:
    target = scaled_object["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    deployment = find(resources, "Deployment", target["name"])
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == (
        "worker"
    )
    assert deployment["metadata"]["namespace"] == scaled_object["metadata"]["namespace"]


def test_replicas_stay_between_two_and_the_partition_count(
    scaled_object: Resource, topology: Topology
) -> None:
    spec = scaled_object["spec"]
    # A worker beyond the partition count would own no partition.
    assert 2 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= topology.partitions
    assert spec["cooldownPeriod"] > 0
    assert spec["pollingInterval"] > 0


def test_the_ceiling_is_the_partition_count_of_the_config_map(tmp_path: Path) -> None:
    # One source: a base whose ConfigMap says 24 partitions scales to 24 workers.
    base = shutil.copytree(K8S, tmp_path / "k8s")
    configmap = base / "configmap.yaml"
    text = configmap.read_text()
    assert 'PACHYDERM_PARTITIONS: "16"' in text
    configmap.write_text(text.replace('PACHYDERM_PARTITIONS: "16"', 'PACHYDERM_PARTITIONS: "24"'))
    (scaled,) = of_kind(render(base), "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == 24


def test_scaling_down_is_gradual(scaled_object: Resource) -> None:
    behavior = scaled_object["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    scale_down = behavior["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 60
    assert scale_down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]


def test_the_trigger_sums_the_length_of_the_queues_matched_by_a_regex(trigger: Resource) -> None:
    assert trigger["type"] == "rabbitmq"
    metadata = mapping(trigger["metadata"], "trigger metadata")
    # KEDA reads trigger metadata as strings: an unquoted true or 1000 is refused.
    for key, value in metadata.items():
        assert isinstance(value, str), f"metadata {key} must be a quoted string: {value!r}"
    assert metadata["mode"] == "QueueLength"
    assert metadata["useRegex"] == "true"
    assert metadata["operation"] == "sum"
    # KEDA only matches queue names by regex through the management HTTP API.
    assert metadata["protocol"] == "http"
    assert float(metadata["value"]) > 0
    assert "host" not in metadata, "credentials belong in the TriggerAuthentication's Secret"


def test_the_queue_pattern_matches_every_partition_queue_and_nothing_else(
    trigger: Resource, topology: Topology
) -> None:
    # RabbitMQ's management API searches names with this regex (unanchored).
    pattern = re.compile(trigger["metadata"]["queueName"])
    for partition in range(topology.partitions):
        queue = topology.partition_queue(partition)
        assert pattern.search(queue), f"{pattern.pattern} misses {queue}"
    namespace = topology.namespace
    others = [
        topology.commands_exchange,
        topology.effects_queue("handlers"),
        topology.dead_letter_queue,
        f"{namespace}.replies.0123456789abcdef0123456789abcdef",
        Topology(f"{namespace}_b", topology.partitions).partition_queue(0),
        Topology(f"x{namespace}", topology.partitions).partition_queue(0),
        f"{topology.partition_queue(0)}.x",
    ]
    for queue in others:
        assert not pattern.search(queue), f"{pattern.pattern} also matches {queue}"


def test_the_authentication_resolves_to_a_secret_with_the_host(
    resources: list[Resource], scaled_object: Resource, trigger: Resource
) -> None:
    reference = mapping(trigger["authenticationRef"], "authenticationRef")
    assert reference.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
    authentication = find(resources, "TriggerAuthentication", reference["name"])
    assert authentication["apiVersion"] == KEDA
    assert authentication["metadata"]["namespace"] == scaled_object["metadata"]["namespace"]
    targets = sequence(authentication["spec"]["secretTargetRef"], "secretTargetRef")
    assert {t["parameter"] for t in targets} == {"host"}
    for target in targets:
        secret = find(resources, "Secret", target["name"])
        host = mapping(secret["stringData"], "stringData")[target["key"]]
        # The management API (http), with the vhost as its last path segment.
        assert re.fullmatch(r"https?://[^/\s]+:[^@/\s]+@[^/\s]+:\d+/\S*", host), host
