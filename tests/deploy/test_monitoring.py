"""deploy/k8s-monitoring: the Prometheus Operator scrapes every Pachyderm process.

The operator's custom resources have no bundled schema: their selectors and
ports are checked against the base's pods and Services they must find.
"""

from __future__ import annotations

from .manifests import (
    K8S,
    Resource,
    config_map_data,
    kustomization,
    load_documents,
    load_yaml,
    mapping,
    pod_spec,
    render,
    sequence,
)

MONITORING = K8S.parent / "k8s-monitoring"
OPERATOR = "monitoring.coreos.com/v1"


def _monitors(kind: str) -> Resource:
    found = [d for p in MONITORING.glob("*monitor.yaml") for d in load_documents(p)]
    (monitor,) = [d for d in found if d["kind"] == kind]
    assert monitor["apiVersion"] == OPERATOR
    return monitor


def _selects(selector: Resource, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions with In) picks ``labels``."""
    wanted = mapping(selector.get("matchLabels", {}), "matchLabels")
    if any(labels.get(key) != value for key, value in wanted.items()):
        return False
    for expression in sequence(selector.get("matchExpressions", []), "matchExpressions"):
        assert expression["operator"] == "In", "only In is checked here"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_the_overlay_adds_the_monitors_to_the_base_in_its_namespace() -> None:
    spec = load_yaml(MONITORING / "kustomization.yaml")
    listed = [str(entry) for entry in sequence(spec["resources"], "resources")]
    on_disk = {p.name for p in MONITORING.glob("*.y*ml")} - {"kustomization.yaml"}
    assert listed[0] == "../k8s"
    assert set(listed[1:]) == on_disk
    assert spec["namespace"] == kustomization()["namespace"]


def test_workers_dispatchers_and_projections_are_scraped_on_their_health_port() -> None:
    resources = render()
    monitor = _monitors("PodMonitor")
    [endpoint] = sequence(monitor["spec"]["podMetricsEndpoints"], "podMetricsEndpoints")
    assert endpoint["path"] == "/metrics"
    health_port = int(config_map_data(resources)["PACHYDERM_HEALTH_PORT"])
    scraped = set()
    for resource in resources:
        spec = pod_spec(resource)
        labels = resource.get("spec", {}).get("template", {}).get("metadata", {}).get("labels")
        if spec is None or labels is None or not _selects(monitor["spec"]["selector"], labels):
            continue
        (container,) = sequence(spec["containers"], "containers")
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert ports.get(endpoint["port"]) == health_port, resource["metadata"]["name"]
        scraped.add(resource["metadata"]["name"])
    # The projection processes report their lag (pachyderm.projection.lag).
    assert scraped == {"pachyderm-worker", "pachyderm-effects", "pachyderm-projections"}


def test_the_gateway_is_scraped_through_its_service() -> None:
    resources = render()
    monitor = _monitors("ServiceMonitor")
    [endpoint] = sequence(monitor["spec"]["endpoints"], "endpoints")
    assert endpoint["path"] == "/metrics"
    services = [
        r
        for r in resources
        if r["kind"] == "Service" and _selects(monitor["spec"]["selector"], r["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in services] == ["pachyderm-gateway"]
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    assert endpoint["port"] in port_names
