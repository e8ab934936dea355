"""deploy/k8s: the kustomize base parses, renders, passes Kubernetes' schemas and fits the app.

Offline: the base is rendered by ``manifests.render`` (and compared with
``kubectl kustomize`` where kubectl is installed), then checked against the
JSON schemas bundled with kubernetes-validate, in strict mode (no unknown
field), and against Pachyderm's own settings, CLI and ports.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import kubernetes_validate
import pytest

from pachyderm import Settings
from pachyderm._loading import load_app
from pachyderm._settings import DEFAULT_SECRETS_DIR
from pachyderm.cli._projections import with_relay
from pachyderm.gateway import GatewayOptions

from .manifests import (
    DOCKERFILE,
    FLEET_SECRET_SETTINGS,
    K8S,
    SECRET_SETTINGS,
    WORKERS_README,
    Resource,
    cli_error,
    config_map_data,
    containers,
    expand,
    find,
    kubectl_kustomize,
    kustomization,
    load_documents,
    mapping,
    of_kind,
    parse_dockerfile,
    parse_settings,
    pod_spec,
    render,
    sequence,
    setting_name,
    setting_variables,
)

# The oldest Kubernetes the base supports, and the newest schemas bundled.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
# Custom resources: checked field by field in test_keda.py.
CUSTOM_API_GROUPS = ("keda.sh/",)
WORKERS = "pachyderm-worker"
GATEWAY = "pachyderm-gateway"
EFFECTS = "pachyderm-effects"
PROJECTIONS = "pachyderm-projections"
SECRET = "pachyderm-secrets"


@pytest.fixture
def resources() -> list[Resource]:
    return render()


@pytest.fixture
def settings_data(resources: list[Resource]) -> dict[str, str]:
    return config_map_data(resources)


def _workloads(resources: list[Resource]) -> list[tuple[Resource, Resource]]:
    return [(r, spec) for r in resources if (spec := pod_spec(r)) is not None]


def _port(container: Resource, port: int | str) -> int:
    """A probe's or Service's port, resolving a named container port."""
    if isinstance(port, int):
        return port
    for declared in sequence(container.get("ports", []), "ports"):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def _only_container(resource: Resource) -> Resource:
    spec = pod_spec(resource)
    assert spec is not None
    (container,) = sequence(spec["containers"], "containers")
    return mapping(container, "container")


def _secret_keys(resources: list[Resource], name: str) -> set[str]:
    secret = find(resources, "Secret", name)
    keys = set(mapping(secret.get("stringData", {}), "stringData"))
    return keys | set(mapping(secret.get("data", {}), "data"))


# --- the kustomization -------------------------------------------------------


def test_the_kustomization_lists_every_manifest_in_the_folder_and_nothing_else() -> None:
    listed = [str(entry) for entry in sequence(kustomization()["resources"], "resources")]
    on_disk = {p.name for p in K8S.glob("*.y*ml")} - {"kustomization.yaml"}
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    assert set(listed) == on_disk, (
        f"not listed: {sorted(on_disk - set(listed))}; missing: {sorted(set(listed) - on_disk)}"
    )


@pytest.mark.parametrize("path", sorted(K8S.glob("*.y*ml")), ids=lambda p: p.name)
def test_every_manifest_parses_into_resources_with_kind_and_name(path: Path) -> None:
    documents = load_documents(path)
    assert documents, f"{path.name} holds no resource"
    if path.name == "kustomization.yaml":
        return
    for document in documents:
        assert {"apiVersion", "kind"} <= set(document), f"{path.name}: {document}"
        assert mapping(document.get("metadata"), "metadata").get("name"), f"{path.name}: no name"


def test_resources_are_unique_and_all_land_in_the_namespace(resources: list[Resource]) -> None:
    keys = [(r["kind"], r["metadata"]["name"]) for r in resources]
    assert len(keys) == len(set(keys)), f"duplicates: {keys}"
    namespace = kustomization()["namespace"]
    (namespace_resource,) = of_kind(resources, "Namespace")
    assert namespace_resource["metadata"]["name"] == namespace
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"].get("namespace") == namespace, resource["metadata"]


def test_every_resource_carries_the_recommended_labels(resources: list[Resource]) -> None:
    for resource in resources:
        labels = mapping(resource["metadata"].get("labels"), f"{resource['kind']} labels")
        assert labels.get("app.kubernetes.io/name") == "pachyderm", resource["metadata"]
        assert labels.get("app.kubernetes.io/part-of") == "pachyderm", resource["metadata"]
    for resource, _ in _workloads(resources):
        template_labels = resource["spec"]["template"]["metadata"]["labels"]
        assert template_labels.get("app.kubernetes.io/component"), resource["metadata"]["name"]
        assert template_labels.get("app.kubernetes.io/part-of") == "pachyderm"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_built_in_resources_pass_the_kubernetes_schemas_strictly(
    resources: list[Resource], version: str
) -> None:
    checked = 0
    for resource in resources:
        if str(resource["apiVersion"]).startswith(CUSTOM_API_GROUPS):
            continue
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            name = f"{resource['kind']} {resource['metadata']['name']}"
            pytest.fail(f"{name} fails Kubernetes {version}: {error.message} at {error.path}")
        checked += 1
    assert checked >= 10


def test_the_schemas_do_catch_an_unknown_field(resources: list[Resource]) -> None:
    workers = find(resources, "Deployment", WORKERS)
    workers["spec"]["template"]["spec"]["terminationGracePeriod"] = 30  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(workers, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_renderer_agrees_with_kubectl_kustomize(resources: list[Resource]) -> None:
    theirs = kubectl_kustomize()

    def key(resource: Resource) -> tuple[str, str]:
        return resource["kind"], resource["metadata"]["name"]

    assert sorted(theirs, key=key) == sorted(resources, key=key)


# --- settings: ConfigMap and Secret ------------------------------------------


def test_the_config_map_holds_only_real_non_secret_settings(
    settings_data: dict[str, str],
) -> None:
    unknown = set(settings_data) - setting_variables()
    assert not unknown, f"not Pachyderm settings: {sorted(unknown)}"
    secrets = {setting_name(k) for k in settings_data} & SECRET_SETTINGS
    assert not secrets, f"secrets belong in the Secret, not the ConfigMap: {sorted(secrets)}"
    assert {"PACHYDERM_NAMESPACE", "PACHYDERM_PARTITIONS", "PACHYDERM_APP"} <= set(settings_data)
    parse_settings(settings_data)  # every value is valid for its setting


def test_secret_like_settings_are_exactly_those_the_library_treats_as_secret() -> None:
    secret_typed = {
        name for name, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)
    }
    assert secret_typed == SECRET_SETTINGS


def test_the_secret_holds_every_secret_setting_and_only_settings(
    resources: list[Resource],
) -> None:
    secret = find(resources, "Secret", SECRET)
    keys = _secret_keys(resources, SECRET)
    assert keys <= setting_variables(), f"not Pachyderm settings: {sorted(keys)}"
    assert {setting_name(k) for k in keys} == FLEET_SECRET_SETTINGS
    values = mapping(secret["stringData"], "stringData")
    assert all(isinstance(v, str) for v in values.values())
    parse_settings(values)  # the placeholders have the right shape


def test_the_placeholder_secret_lets_no_one_through_the_gateway(
    resources: list[Resource], settings_data: dict[str, str]
) -> None:
    secret = mapping(find(resources, "Secret", SECRET)["stringData"], "stringData")
    settings = parse_settings({**settings_data, **secret})
    assert settings.gateway_auth
    # Deployed unchanged, the gateway refuses to start rather than admit a known token.
    with pytest.raises(ValueError, match="bearer tokens"):
        GatewayOptions.from_settings(settings)


def test_pods_get_settings_from_the_config_map_and_secrets_as_files(
    resources: list[Resource],
) -> None:
    (config_map,) = of_kind(resources, "ConfigMap")
    secret_keys = _secret_keys(resources, SECRET)
    for resource, spec in _workloads(resources):
        name = resource["metadata"]["name"]
        volumes = {v["name"]: v for v in sequence(spec.get("volumes", []), "volumes")}
        for container in sequence(spec["containers"], "containers"):
            sources = sequence(container.get("envFrom", []), "envFrom")
            assert {"configMapRef": {"name": config_map["metadata"]["name"]}} in sources, name
            for variable in sequence(container.get("env", []), "env"):
                assert setting_name(variable["name"]) not in SECRET_SETTINGS, (name, variable)
            mounts = {m["mountPath"]: m for m in sequence(container["volumeMounts"], "mounts")}
            mount = mounts.get(DEFAULT_SECRETS_DIR)
            assert mount is not None, f"{name} does not mount secrets at {DEFAULT_SECRETS_DIR}"
            assert mount.get("readOnly") is True
            volume = mapping(volumes[mount["name"]]["secret"], f"{name} secret volume")
            assert volume["secretName"] == SECRET
            assert volume.get("defaultMode") == 0o440, f"{name}: mode {volume.get('defaultMode')}"
            # Each file is named like its variable, the way load_settings reads it.
            items = sequence(volume.get("items"), f"{name} secret items")
            for item in items:
                assert item["key"] in secret_keys, (name, item)
                assert item["path"] == item["key"], (name, item)


def test_each_component_mounts_the_secrets_it_needs_and_no_more(
    resources: list[Resource],
) -> None:
    needs = {
        "pachyderm-migrate": {"PACHYDERM_DATABASE_URL"},
        WORKERS: {"PACHYDERM_DATABASE_URL", "PACHYDERM_AMQP_URL"},
        "pachyderm-effects": {"PACHYDERM_AMQP_URL"},
        # The log and the cursors; RabbitMQ for the event relay.
        PROJECTIONS: {"PACHYDERM_DATABASE_URL", "PACHYDERM_AMQP_URL"},
        # The gateway reads histories from PostgreSQL; its admin routes need their token.
        GATEWAY: {
            *("PACHYDERM_AMQP_URL", "PACHYDERM_GATEWAY_TOKENS", "PACHYDERM_DATABASE_URL"),
            "PACHYDERM_ADMIN_TOKEN",
        },
    }
    mounted = {}
    for resource, spec in _workloads(resources):
        (volume,) = [v for v in spec["volumes"] if "secret" in v]
        mounted[resource["metadata"]["name"]] = {i["key"] for i in volume["secret"]["items"]}
    assert mounted == needs


# --- pods: security and hygiene ----------------------------------------------


def test_every_pod_runs_unprivileged_as_the_images_user(resources: list[Resource]) -> None:
    uids = set()
    for target in ("worker", "examples", "gateway"):
        user = parse_dockerfile(DOCKERFILE).effective("USER", target)
        assert user is not None
        uids.add(int(user.split(":")[0]))
    (uid,) = uids
    for resource, spec in _workloads(resources):
        name = resource["metadata"]["name"]
        pod = mapping(spec.get("securityContext"), f"{name} pod securityContext")
        assert pod.get("runAsNonRoot") is True, name
        assert pod.get("runAsUser") == uid, f"{name} runs as {pod.get('runAsUser')}, image {uid}"
        assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec.get("serviceAccountName") == "pachyderm", name
        # A Service named pachyderm-gateway would otherwise inject
        # PACHYDERM_GATEWAY_PORT=tcp://...:80, which Settings reads as the port.
        assert spec.get("enableServiceLinks") is False, name
    for container in containers(resources):
        context = mapping(container.get("securityContext"), f"{container['name']} securityContext")
        assert context.get("readOnlyRootFilesystem") is True, container["name"]
        assert context.get("allowPrivilegeEscalation") is False, container["name"]
        assert context.get("capabilities") == {"drop": ["ALL"]}, container["name"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, f"{container['name']}: a read-only root needs a writable /tmp"


def test_service_accounts_mount_no_token(resources: list[Resource]) -> None:
    accounts = of_kind(resources, "ServiceAccount")
    assert accounts
    for account in accounts:
        assert account.get("automountServiceAccountToken") is False


def test_every_container_has_resource_requests_and_limits(resources: list[Resource]) -> None:
    for container in containers(resources):
        limits = mapping(container.get("resources"), f"{container['name']} resources")
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(limits.get(kind, {})), (container["name"], kind)


def test_every_command_line_is_one_the_pachyderm_cli_accepts(
    resources: list[Resource], settings_data: dict[str, str]
) -> None:
    for container in containers(resources):
        arguments = [expand(str(a), settings_data) for a in container.get("args", [])]
        assert "command" not in container, "keep the image's ENTRYPOINT (pachyderm)"
        assert arguments, f"{container['name']} has no args"
        assert "$(" not in " ".join(arguments), f"unresolved variable in {arguments}"
        assert cli_error(arguments) is None, f"{arguments}: {cli_error(arguments)}"


def test_the_configured_app_is_importable(settings_data: dict[str, str]) -> None:
    load_app(settings_data["PACHYDERM_APP"])


def test_images_are_the_two_pachyderm_images(resources: list[Resource]) -> None:
    images = {c["name"]: c["image"] for c in containers(resources)}
    assert images == {
        "migrate": "pachyderm-worker:examples",
        "worker": "pachyderm-worker:examples",
        "effects": "pachyderm-worker:examples",
        "projections": "pachyderm-worker:examples",
        "gateway": "pachyderm-gateway:dev",
    }


# --- workers ------------------------------------------------------------------


def _promised_grace_seconds() -> int:
    match = re.search(r"grace period\s+of\s+(\d+)\s*s\b", WORKERS_README.read_text(), re.I)
    assert match, "workers/README.md no longer states the grace period"
    return int(match.group(1))


def test_workers_get_at_least_the_grace_period_the_readme_promises(
    resources: list[Resource],
) -> None:
    spec = pod_spec(find(resources, "Deployment", WORKERS))
    assert spec is not None
    assert spec["terminationGracePeriodSeconds"] >= _promised_grace_seconds()


@pytest.mark.parametrize("name", [WORKERS, EFFECTS, PROJECTIONS])
def test_worker_dispatcher_and_projections_probes_and_scraping_use_the_configured_health_port(
    resources: list[Resource], settings_data: dict[str, str], name: str
) -> None:
    health_port = int(settings_data["PACHYDERM_HEALTH_PORT"])
    # Loopback, the default, is out of the kubelet's and Prometheus's reach.
    assert settings_data["PACHYDERM_HEALTH_HOST"] == "0.0.0.0"
    workers = find(resources, "Deployment", name)
    container = _only_container(workers)
    paths = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in paths.items():
        http = mapping(container[probe]["httpGet"], f"{probe}.httpGet")
        assert http["path"] == path, probe
        assert _port(container, http["port"]) == health_port, probe
    annotations = workers["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == health_port


def test_autoscaled_deployments_leave_the_replica_count_to_their_autoscaler(
    resources: list[Resource],
) -> None:
    # A replicas field would reset the autoscaler's count on every apply.
    for name in (WORKERS, GATEWAY):
        assert "replicas" not in find(resources, "Deployment", name)["spec"], name


def test_disruption_budgets_select_exactly_their_deployments_pods(
    resources: list[Resource],
) -> None:
    budgets = {b["metadata"]["name"]: b for b in of_kind(resources, "PodDisruptionBudget")}
    assert set(budgets) == {WORKERS, GATEWAY, PROJECTIONS}
    for name, budget in budgets.items():
        deployment = find(resources, "Deployment", name)
        selector = budget["spec"]["selector"]["matchLabels"]
        assert selector == deployment["spec"]["selector"]["matchLabels"]
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= template_labels.items()
        assert budget["spec"].get("maxUnavailable") == 1, name


def test_the_migration_job_retries_and_cleans_up(resources: list[Resource]) -> None:
    (job,) = of_kind(resources, "Job")
    assert 1 <= job["spec"]["backoffLimit"] <= 10
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert _only_container(job)["args"] == ["migrate"]


# --- projections --------------------------------------------------------------


def test_the_projections_process_runs_the_configured_apps_projections(
    resources: list[Resource], settings_data: dict[str, str]
) -> None:
    deployment = find(resources, "Deployment", PROJECTIONS)
    container = _only_container(deployment)
    assert container["args"] == ["projections", "$(PACHYDERM_APP)"]
    # It would exit at start (and crash-loop) with nothing to run: the app's own
    # projections, or the event relay PACHYDERM_EVENT_RELAY adds.
    app = with_relay(load_app(settings_data["PACHYDERM_APP"]), parse_settings(settings_data))
    assert app.projections, "the configured app gives the projections process nothing to run"
    # Two, so that one's failure moves its partitions to the other instead of
    # waiting for a restart; never more than the partitions (the others idle).
    assert 2 <= deployment["spec"]["replicas"] <= int(settings_data["PACHYDERM_PARTITIONS"])
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 1, "maxUnavailable": 0}
    spec = pod_spec(deployment)
    assert spec is not None
    workers = pod_spec(find(resources, "Deployment", WORKERS))
    assert workers is not None
    # A runner stops at its batch like a worker: the same grace.
    assert spec["terminationGracePeriodSeconds"] == workers["terminationGracePeriodSeconds"]


def test_without_the_relay_the_demo_app_would_give_the_projections_process_nothing(
    settings_data: dict[str, str],
) -> None:
    # The check above can fail: the demo app registers no projection of its own.
    settings = parse_settings({**settings_data, "PACHYDERM_EVENT_RELAY": "false"})
    assert not with_relay(load_app(settings_data["PACHYDERM_APP"]), settings).projections


# --- gateway ------------------------------------------------------------------


def test_the_gateway_serves_no_app_whose_code_its_image_lacks(
    resources: list[Resource], settings_data: dict[str, str]
) -> None:
    # `pachyderm gateway` serves PACHYDERM_APP's app when it is set, as the ConfigMap
    # sets it for the workers: the gateway's container clears it (empty: no app).
    assert settings_data["PACHYDERM_APP"]
    container = _only_container(find(resources, "Deployment", GATEWAY))
    environment = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert environment["PACHYDERM_APP"] == ""
    assert container["image"].startswith("pachyderm-gateway:")


def test_the_gateway_listens_where_its_probes_service_and_scraper_look(
    resources: list[Resource], settings_data: dict[str, str]
) -> None:
    assert settings_data["PACHYDERM_GATEWAY_HOST"] == "0.0.0.0"
    port = int(settings_data["PACHYDERM_GATEWAY_PORT"])
    gateway = find(resources, "Deployment", GATEWAY)
    container = _only_container(gateway)
    for probe, path in {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}.items():
        assert container[probe]["httpGet"]["path"] == path
        assert _port(container, container[probe]["httpGet"]["port"]) == port
    assert int(gateway["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]) == (
        port
    )
    service = find(resources, "Service", GATEWAY)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= (
        gateway["spec"]["template"]["metadata"]["labels"].items()
    )
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == 80
    assert _port(container, service_port["targetPort"]) == port


def test_the_gateway_autoscales_on_cpu(resources: list[Resource]) -> None:
    autoscaler = find(resources, "HorizontalPodAutoscaler", GATEWAY)
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", GATEWAY)
    find(resources, "Deployment", target["name"])
    assert 2 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    requests = _only_container(find(resources, "Deployment", GATEWAY))["resources"]["requests"]
    assert "cpu" in requests, "CPU utilisation is relative to the request"
