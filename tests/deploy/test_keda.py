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
import yaml

from pachyderm.transport import Topology

from .manifests import (
    K8S,
    Resource,
    config_map_data,
    find,
    kubectl_kustomize,
    load_yaml,
    mapping,
    of_kind,
    render,
    sequence,
)

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


def _with_setting(tmp_path: Path, line: str, replacement: str) -> list[Resource]:
    """The base rendered with the ConfigMap's ``line`` replaced."""
    base = shutil.copytree(K8S, tmp_path / "k8s")
    configmap = base / "configmap.yaml"
    text = configmap.read_text()
    assert f"  {line}\n" in text
    configmap.write_text(text.replace(f"  {line}\n", f"  {replacement}\n"))
    return render(base)


def test_the_ceiling_is_the_partition_count_of_the_config_map(tmp_path: Path) -> None:
    # One source: a base whose ConfigMap says 24 partitions scales to 24 workers.
    resources = _with_setting(tmp_path, 'PACHYDERM_PARTITIONS: "16"', 'PACHYDERM_PARTITIONS: "24"')
    (scaled,) = of_kind(resources, "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == 24


def test_the_queue_pattern_follows_the_namespace_of_the_config_map(tmp_path: Path) -> None:
    # One source: a base whose ConfigMap names another namespace counts its queues.
    resources = _with_setting(
        tmp_path, "PACHYDERM_NAMESPACE: pachyderm", "PACHYDERM_NAMESPACE: shop_eu"
    )
    (scaled,) = of_kind(resources, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["queueName"] == r"^\bshop_eu\b\.commands\.[0-9]+$"
    pattern = re.compile(trigger["metadata"]["queueName"])
    assert pattern.search(Topology("shop_eu", 16).partition_queue(15))
    assert not pattern.search(Topology("pachyderm", 16).partition_queue(0))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_derives_the_queue_pattern_alike(tmp_path: Path) -> None:
    resources = _with_setting(
        tmp_path, "PACHYDERM_NAMESPACE: pachyderm", "PACHYDERM_NAMESPACE: shop_eu"
    )
    theirs = find(kubectl_kustomize(tmp_path / "k8s"), "ScaledObject", "pachyderm-worker")
    assert theirs == find(resources, "ScaledObject", "pachyderm-worker")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_an_overlay_that_patches_the_settings_repeats_the_replacements(tmp_path: Path) -> None:
    # As deploy/k8s/README.md says: the base's replacements run before an overlay's
    # patches, so an overlay moving the settings must repeat them.
    shutil.copytree(K8S, tmp_path / "k8s")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    patch = [
        {"op": "replace", "path": "/data/PACHYDERM_NAMESPACE", "value": "shop_eu"},
        {"op": "replace", "path": "/data/PACHYDERM_PARTITIONS", "value": "24"},
    ]
    spec: Resource = {
        "resources": ["../k8s"],
        "patches": [
            {"target": {"kind": "ConfigMap", "name": "pachyderm-config"}, "patch": yaml.dump(patch)}
        ],
    }
    for repeated, namespace, partitions in ((False, "pachyderm", 16), (True, "shop_eu", 24)):
        if repeated:
            spec["replacements"] = load_yaml(K8S / "kustomization.yaml")["replacements"]
        (overlay / "kustomization.yaml").write_text(yaml.dump(spec))
        scaled = find(kubectl_kustomize(overlay), "ScaledObject", "pachyderm-worker")
        assert scaled["spec"]["maxReplicaCount"] == partitions
        queue_name = scaled["spec"]["triggers"][0]["metadata"]["queueName"]
        assert queue_name == rf"^\b{namespace}\b\.commands\.[0-9]+$"


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
        f"{namespace}.replies.bundled.0123456789abcdef0123456789abcdef",
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
