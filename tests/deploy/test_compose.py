"""docker-compose.yml: a fleet that starts in the right order with real commands and settings.

No Docker engine is needed: the file is parsed and checked against the
pachyderm CLI, the Settings fields, the Dockerfile and the workers' README.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from pachyderm._loading import load_app
from pachyderm.gateway import GatewayOptions

from .manifests import (
    COMPOSE,
    ROOT,
    WORKERS_README,
    Resource,
    cli_error,
    load_yaml,
    mapping,
    parse_dockerfile,
    parse_settings,
    sequence,
    setting_variables,
)

INFRASTRUCTURE = {"rabbitmq", "postgres"}
# The "observability" profile: started only when asked for.
OBSERVABILITY = {"collector", "jaeger", "prometheus"}
PLUGIN = "rabbitmq_consistent_hash_exchange"


@pytest.fixture
def services() -> dict[str, Resource]:
    compose = load_yaml(COMPOSE)
    return {name: mapping(s, name) for name, s in mapping(compose["services"], "services").items()}


def _pachyderm_services(services: dict[str, Resource]) -> dict[str, Resource]:
    return {name: s for name, s in services.items() if name not in INFRASTRUCTURE | OBSERVABILITY}


def _environment(service: Resource) -> dict[str, str]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "use the mapping form of environment"
    for key, value in environment.items():
        assert isinstance(value, str), f"quote {key}'s value: {value!r}"
    return {str(k): str(v) for k, v in environment.items()}


def _conditions(service: Resource) -> dict[str, str]:
    depends = mapping(service.get("depends_on", {}), "depends_on (long form)")
    return {name: mapping(v, name)["condition"] for name, v in depends.items()}


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"odd duration {duration!r}"
    assert parts, f"odd duration {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_pachyderm_services_run_real_pachyderm_commands(services: dict[str, Resource]) -> None:
    commands = {}
    for name, service in _pachyderm_services(services).items():
        command = sequence(service.get("command"), f"{name}'s command (exec form)")
        assert "entrypoint" not in service, f"{name}: keep the image's ENTRYPOINT (pachyderm)"
        assert cli_error(command) is None, f"{name}: {command}: {cli_error(command)}"
        commands[name] = command[0]
    assert commands == {
        "migrate": "migrate",
        "topology": "topology",
        "worker": "worker",
        "effects": "effects",
        "gateway": "gateway",
    }


def test_the_worker_and_the_dispatcher_serve_health_where_the_image_probes(
    services: dict[str, Resource],
) -> None:
    # The image's HEALTHCHECK asks PACHYDERM_HEALTH_PORT; a disabled check
    # would hide a stuck process.
    for name in ("worker", "effects"):
        service = services[name]
        assert not mapping(service.get("healthcheck", {}), name).get("disable"), name
        assert parse_settings(_environment(service)).health_port == 8081, name


def test_the_served_app_is_importable(services: dict[str, Resource]) -> None:
    for name in ("worker", "effects"):
        load_app(services[name]["command"][1])


def test_environment_names_are_real_settings_with_valid_values(
    services: dict[str, Resource],
) -> None:
    for name, service in _pachyderm_services(services).items():
        environment = _environment(service)
        unknown = set(environment) - setting_variables()
        assert not unknown, f"{name}: not Pachyderm settings: {sorted(unknown)}"
        settings = parse_settings(environment)
        assert settings.database_url.get_secret_value().startswith("postgresql://"), name
        assert settings.partitions == 16, name


def test_urls_reach_the_compose_services_with_their_credentials(
    services: dict[str, Resource],
) -> None:
    postgres = _environment(services["postgres"])
    rabbitmq = _environment(services["rabbitmq"])
    for name, service in _pachyderm_services(services).items():
        settings = parse_settings(_environment(service))
        database = urlsplit(settings.database_url.get_secret_value())
        assert (database.hostname, database.password) == ("postgres", postgres["POSTGRES_PASSWORD"])
        assert database.path == "/" + postgres["POSTGRES_DB"], name
        broker = urlsplit(settings.amqp_url.get_secret_value())
        assert broker.hostname == "rabbitmq", name
        # guest may only connect from localhost: another user is needed.
        assert (broker.username, broker.password) == (
            rabbitmq["RABBITMQ_DEFAULT_USER"],
            rabbitmq["RABBITMQ_DEFAULT_PASS"],
        ), name
        assert broker.username != "guest"


def test_rabbitmq_runs_3_13_with_the_consistent_hash_plugin(
    services: dict[str, Resource],
) -> None:
    rabbitmq = services["rabbitmq"]
    assert str(rabbitmq["image"]).startswith("rabbitmq:3.13-management")
    assert re.search(rf"rabbitmq-plugins enable [^&;]*\b{PLUGIN}\b", rabbitmq["command"])
    assert "exec docker-entrypoint.sh rabbitmq-server" in rabbitmq["command"]
    # Healthy only once the plugin is on, since workers declare that exchange.
    assert PLUGIN in " ".join(rabbitmq["healthcheck"]["test"])


def test_postgres_runs_16_with_a_healthcheck(services: dict[str, Resource]) -> None:
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:16(\.\d+)?(-alpine)?", postgres["image"])
    assert "pg_isready" in postgres["healthcheck"]["test"]


def test_dependencies_wait_for_health_or_completion(services: dict[str, Resource]) -> None:
    one_shots = {n for n, s in services.items() if s.get("restart") == "no"}
    assert one_shots == {"migrate", "topology"}
    for name, service in services.items():
        for dependency, condition in _conditions(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if dependency in one_shots:
                assert condition == "service_completed_successfully", (name, dependency)
            else:
                assert condition == "service_healthy", (name, dependency)
                check = mapping(services[dependency].get("healthcheck"), dependency)
                assert check.get("test"), f"{dependency} has no healthcheck"
                assert not check.get("disable"), f"{dependency}'s healthcheck is disabled"


def test_the_schema_and_topology_come_before_workers_and_gateway(
    services: dict[str, Resource],
) -> None:
    assert _conditions(services["migrate"]) == {"postgres": "service_healthy"}
    assert _conditions(services["topology"]) == {"rabbitmq": "service_healthy"}
    for name in ("worker", "gateway"):
        conditions = _conditions(services[name])
        assert conditions["migrate"] == "service_completed_successfully", name
        assert conditions["topology"] == "service_completed_successfully", name
        assert conditions["rabbitmq"] == "service_healthy", name
        assert conditions["postgres"] == "service_healthy", name


def test_three_workers_stop_gracefully(services: dict[str, Resource]) -> None:
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 3
    promised = re.search(r"grace period\s+of\s+(\d+)\s*s\b", WORKERS_README.read_text(), re.I)
    assert promised, "workers/README.md no longer states the grace period"
    for name in ("worker", "effects", "gateway"):
        service = services[name]
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM", name
        assert _seconds(service["stop_grace_period"]) >= int(promised.group(1)), name


def test_the_gateway_is_published_on_8080_with_a_dev_token(services: dict[str, Resource]) -> None:
    gateway = services["gateway"]
    environment = _environment(gateway)
    settings = parse_settings(environment)
    assert settings.gateway_host == "0.0.0.0"
    assert settings.gateway_auth
    assert GatewayOptions.from_settings(settings).tokens, "the development token must parse"
    published = [str(p) for p in sequence(gateway["ports"], "ports")]
    assert f"8080:{settings.gateway_port}" in published


def _mounted(service: Resource, target: str) -> Resource:
    """The repository file ``service`` mounts at ``target``, parsed."""
    for volume in sequence(service["volumes"], "volumes"):
        source, mounted, *_ = str(volume).split(":")
        if mounted == target:
            return load_yaml(ROOT / source)
    raise AssertionError(f"nothing is mounted at {target}")


def test_the_observability_profile_collects_traces_and_scrapes_every_process(
    services: dict[str, Resource],
) -> None:
    for name in OBSERVABILITY:
        assert services[name].get("profiles") == ["observability"], name
    # Off by default: an empty endpoint exports nothing.
    environment = _environment(services["worker"])
    assert environment["PACHYDERM_OTLP_ENDPOINT"] == "${PACHYDERM_OTLP_ENDPOINT:-}"
    assert "PACHYDERM_OTLP_ENDPOINT=http://collector:4318" in COMPOSE.read_text()
    config = _mounted(services["collector"], "/etc/otelcol/config.yaml")
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}  # a missing one would refuse the export
    [traces_to] = pipelines["traces"]["exporters"]
    assert config["exporters"][traces_to]["endpoint"] == "jaeger:4317"
    scraped = _mounted(services["prometheus"], "/etc/prometheus/prometheus.yml")
    targets = set()
    for job in sequence(scraped["scrape_configs"], "scrape_configs"):
        for static in job.get("static_configs", []):
            targets.update(static["targets"])
        for found in job.get("dns_sd_configs", []):
            targets.update(f"{name}:{found['port']}" for name in found["names"])
    health = {
        n: parse_settings(_environment(services[n])).health_port for n in ("worker", "effects")
    }
    gateway = parse_settings(_environment(services["gateway"])).gateway_port
    assert targets == {
        f"worker:{health['worker']}",
        f"effects:{health['effects']}",
        f"gateway:{gateway}",
    }


def test_images_are_built_from_the_repository_dockerfiles(services: dict[str, Resource]) -> None:
    built: dict[str, Any] = {}
    for name, service in _pachyderm_services(services).items():
        build = mapping(service.get("build"), f"{name}'s build")
        assert (ROOT / build["context"]).resolve() == ROOT, "the context is the repository root"
        dockerfile = ROOT / build["dockerfile"]
        assert dockerfile.is_file(), build["dockerfile"]
        parsed = parse_dockerfile(dockerfile)
        parsed.stage(build.get("target"))  # the target exists
        built[name] = (build["dockerfile"], build.get("target"), service["image"])
    # One image for every worker-image service, so it is built once.
    worker_builds = {built[n] for n in ("migrate", "topology", "worker", "effects")}
    assert worker_builds == {("Dockerfile", "examples", "pachyderm-worker:examples")}
    # The gateway is another target of the same Dockerfile: the same build stage.
    assert built["gateway"] == ("Dockerfile", "gateway", "pachyderm-gateway:dev")
