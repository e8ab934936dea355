"""Reading the deployment files offline: YAML, a small kustomize, Dockerfiles, the CLI.

The kustomize renderer covers exactly what ``deploy/k8s/kustomization.yaml``
uses (resources, namespace, labels, images, replacements) and refuses any other field, so
it never silently renders something else than ``kustomize build`` would.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from pachyderm import Settings
from pachyderm.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
# Both images: one build stage, a target per deployable.
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
WORKERS_README = ROOT / "workers" / "README.md"

Resource = dict[str, Any]

# Settings whose values are secrets: never in a ConfigMap, an image or a log.
SECRET_SETTINGS = frozenset(
    {
        "database_url",
        "database_shards",
        "amqp_url",
        "gateway_tokens",
        "gateway_token",
        "admin_token",
    }
)
# Of those, what the fleet's own processes read (the rest is for callers'
# shells, e.g. `pachyderm call --gateway`): the Secret holds these.
FLEET_SECRET_SETTINGS = SECRET_SETTINGS - {"gateway_token"}
# Read by load_settings itself rather than a Settings field.
SECRETS_DIR_VARIABLE = "PACHYDERM_SECRETS_DIR"

# Kinds kustomize leaves without a namespace (those this base could ever hold).
_CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "PriorityClass",
        "StorageClass",
        "ClusterTriggerAuthentication",
    }
)
_POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
_SUPPORTED_KUSTOMIZATION_FIELDS = frozenset(
    {"apiVersion", "kind", "namespace", "labels", "resources", "images", "replacements"}
)


# --- YAML --------------------------------------------------------------------


def load_yaml(path: Path) -> Resource:
    """One YAML document that must be a mapping."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return cast(Resource, data)


def load_documents(path: Path) -> list[Resource]:
    """Every non-empty document of a multi-document YAML file; each must be a mapping."""
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for number, document in enumerate(documents, start=1):
        assert isinstance(document, dict), f"{path}, document {number}, is not a mapping"
    return [cast(Resource, d) for d in documents]


def mapping(value: Any, what: str) -> Resource:
    """``value`` as a mapping, or a failed assertion naming ``what``."""
    assert isinstance(value, dict), f"{what} is not a mapping: {value!r}"
    return cast(Resource, value)


def sequence(value: Any, what: str) -> list[Any]:
    """``value`` as a list, or a failed assertion naming ``what``."""
    assert isinstance(value, list), f"{what} is not a list: {value!r}"
    return value


# --- settings ----------------------------------------------------------------


def setting_variables() -> set[str]:
    """Every ``PACHYDERM_*`` variable a Settings field reads."""
    return {f"PACHYDERM_{name.upper()}" for name in Settings.model_fields}


def setting_name(variable: str) -> str:
    """``PACHYDERM_HEALTH_PORT`` -> ``health_port``."""
    assert variable.startswith("PACHYDERM_"), f"{variable} lacks the PACHYDERM_ prefix"
    return variable.removeprefix("PACHYDERM_").lower()


def parse_settings(variables: dict[str, str]) -> Settings:
    """The settings these variables give, on top of the defaults only (not the environment)."""
    values = {setting_name(k): v for k, v in variables.items() if k != SECRETS_DIR_VARIABLE}
    return Settings.model_validate(values)


# --- the pachyderm command ---------------------------------------------------


def subcommands() -> set[str]:
    """The subcommands the real ``pachyderm`` parser knows."""
    for action in _parser()._actions:
        choices = action.choices
        if isinstance(choices, dict):
            return set(choices)
    raise AssertionError("the pachyderm parser has no subcommands")


def cli_error(argv: list[str]) -> str | None:
    """``None`` when ``pachyderm ARGV`` parses, else the parser's complaint."""
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            _parser().parse_args(argv)
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                return errors.getvalue().strip() or f"exit code {exit_.code}"
    return None


# --- kustomize ---------------------------------------------------------------


def kustomization() -> Resource:
    return load_yaml(K8S / "kustomization.yaml")


def render(folder: Path = K8S) -> list[Resource]:
    """What ``kustomize build FOLDER`` gives, for the fields this base uses."""
    spec = load_yaml(folder / "kustomization.yaml")
    unsupported = set(spec) - _SUPPORTED_KUSTOMIZATION_FIELDS
    assert not unsupported, f"the test renderer does not support {sorted(unsupported)}"
    resources: list[Resource] = []
    for entry in sequence(spec.get("resources", []), "resources"):
        resources.extend(load_documents(folder / str(entry)))
    namespace = spec.get("namespace")
    for resource in resources:
        metadata = mapping(resource.setdefault("metadata", {}), "metadata")
        if namespace is None:
            continue
        if resource["kind"] == "Namespace":
            metadata["name"] = namespace
        elif resource["kind"] not in _CLUSTER_SCOPED:
            metadata["namespace"] = namespace
    for entry in sequence(spec.get("labels", []), "labels"):
        _apply_labels(resources, mapping(entry, "labels entry"))
    for entry in sequence(spec.get("images", []), "images"):
        _apply_image(resources, mapping(entry, "images entry"))
    for entry in sequence(spec.get("replacements", []), "replacements"):
        _apply_replacement(resources, mapping(entry, "replacements entry"))
    return resources


def kubectl_kustomize(folder: Path = K8S) -> list[Resource]:
    """What the real ``kubectl kustomize FOLDER`` renders (kubectl must be installed)."""
    built = subprocess.run(
        ["kubectl", "kustomize", str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [cast(Resource, d) for d in yaml.safe_load_all(built) if d is not None]


def _apply_replacement(resources: list[Resource], entry: Resource) -> None:
    """A replacement of one field by another, as kustomize makes it.

    Field paths are dotted; a segment ``[key=value]`` picks the one item of a
    list with that value, a number the item at that index. As kustomize does,
    a source string that reads as an integer replaces an integer target as an
    integer (``"16"`` into ``maxReplicaCount: 16``), and with ``options``
    (``delimiter`` and ``index``) it replaces only that part of a string
    target split on the delimiter.
    """
    source = mapping(entry["source"], "replacement source")
    found = find(resources, source["kind"], source["name"])
    value: Any = _field(found, str(source["fieldPath"]))
    for target in sequence(entry["targets"], "replacement targets"):
        unsupported = set(target) - {"select", "fieldPaths", "options"}
        assert not unsupported, f"the test renderer does not support {sorted(unsupported)}"
        select = mapping(target["select"], "select")
        chosen = [
            r
            for r in resources
            if all(r.get(k, r["metadata"].get(k)) == v for k, v in select.items())
        ]
        assert chosen, f"a replacement selects nothing: {select}"
        options = mapping(target.get("options", {}), "replacement options")
        for resource in chosen:
            for path in sequence(target["fieldPaths"], "fieldPaths"):
                parent, last = path.rsplit(".", 1) if "." in path else ("", path)
                node = mapping(_field(resource, parent) if parent else resource, path)
                assert last in node, f"{path} is not in {resource['metadata']['name']}"
                node[last] = _replaced(node[last], value, options)


def _field(node: Any, path: str) -> Any:
    """What the kustomize field path ``path`` names in ``node``."""
    for segment in _segments(path):
        if isinstance(node, list):
            node = _item(node, segment, path)
        else:
            node = mapping(node, path)[segment]
    return node


def _segments(path: str) -> list[str]:
    """A field path's segments: ``a.[k=v.w].b`` -> ``a``, ``[k=v.w]``, ``b``."""
    return re.findall(r"\[[^\]]*\]|[^.\[]+", path)


def _item(items: list[Any], segment: str, path: str) -> Any:
    if segment.isdigit():
        return items[int(segment)]
    match = re.fullmatch(r"\[([^=]+)=(.*)\]", segment)
    assert match, f"{path}: {segment} picks no list item"
    key, wanted = match.groups()
    (found,) = [item for item in items if isinstance(item, dict) and item.get(key) == wanted]
    return found


def _replaced(old: Any, value: Any, options: Resource) -> Any:
    """``old`` replaced by ``value``, whole or (with options) in its delimited part."""
    unsupported = set(options) - {"delimiter", "index"}
    assert not unsupported, f"the test renderer does not support options {sorted(unsupported)}"
    if not options:
        return int(value) if isinstance(old, int) else value
    assert isinstance(old, str), f"a delimited replacement of a non-string {old!r}"
    parts = old.split(str(options["delimiter"]))
    index = int(options.get("index", 0))
    # kustomize prepends or appends out of range: this base never means to.
    assert 0 <= index < len(parts), f"index {index} is outside {parts}"
    parts[index] = str(value)
    return str(options["delimiter"]).join(parts)


def _apply_labels(resources: list[Resource], entry: Resource) -> None:
    assert not entry.get("includeSelectors"), "the test renderer does not add labels to selectors"
    unsupported = set(entry) - {"pairs", "includeSelectors", "includeTemplates"}
    assert not unsupported, f"the test renderer does not support labels' {sorted(unsupported)}"
    pairs = {str(k): str(v) for k, v in mapping(entry["pairs"], "labels pairs").items()}
    for resource in resources:
        mapping(resource["metadata"].setdefault("labels", {}), "labels").update(pairs)
        if entry.get("includeTemplates") and resource["kind"] in _POD_TEMPLATE_KINDS:
            template = mapping(resource["spec"]["template"], "pod template")
            metadata = mapping(template.setdefault("metadata", {}), "template metadata")
            mapping(metadata.setdefault("labels", {}), "template labels").update(pairs)


def _split_image(image: str) -> tuple[str, str]:
    """``name[:tag][@digest]`` -> (name, the rest with its separator)."""
    name, at, digest = image.partition("@")
    if at:
        return name, at + digest
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon:]
    return name, ""


def _apply_image(resources: list[Resource], entry: Resource) -> None:
    unsupported = set(entry) - {"name", "newName", "newTag", "digest"}
    assert not unsupported, f"the test renderer does not support images' {sorted(unsupported)}"
    for container in containers(resources):
        name, suffix = _split_image(str(container["image"]))
        if name != entry["name"]:
            continue
        if "digest" in entry:
            suffix = "@" + str(entry["digest"])
        elif "newTag" in entry:
            suffix = ":" + str(entry["newTag"])
        container["image"] = str(entry.get("newName", name)) + suffix


def pod_spec(resource: Resource) -> Resource | None:
    """The pod spec of a workload (Deployment, Job, ...), else ``None``."""
    if resource["kind"] not in _POD_TEMPLATE_KINDS:
        return None
    return mapping(resource["spec"]["template"]["spec"], f"{resource['kind']} pod spec")


def containers(resources: list[Resource]) -> Iterator[Resource]:
    """Every container and init container of every workload."""
    for resource in resources:
        spec = pod_spec(resource)
        if spec is not None:
            for key in ("initContainers", "containers"):
                for container in sequence(spec.get(key, []), key):
                    yield mapping(container, "container")


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    """The one resource of this kind and name."""
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def of_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def config_map_data(resources: list[Resource]) -> dict[str, str]:
    """The settings ConfigMap's data (exactly one ConfigMap in the base)."""
    (config_map,) = of_kind(resources, "ConfigMap")
    data = mapping(config_map.get("data", {}), "ConfigMap data")
    for key, value in data.items():
        assert isinstance(value, str), f"ConfigMap value of {key} must be a string: {value!r}"
    return cast(dict[str, str], data)


def expand(argument: str, environment: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of a container argument (undefined: left as is)."""
    return re.sub(
        r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: environment.get(m.group(1), m.group(0)),
        argument,
    )


# --- Dockerfiles -------------------------------------------------------------


@dataclass
class Stage:
    """One ``FROM`` of a Dockerfile and its instructions, in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, instruction: str) -> str | None:
        values = [arguments for name, arguments in self.instructions if name == instruction]
        return values[-1] if values else None

    def all(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, target: str | None = None) -> Stage:
        """A named stage, or the default target (the last one)."""
        if target is None:
            return self.stages[-1]
        for stage in self.stages:
            if stage.name == target:
                return stage
        raise AssertionError(f"no stage named {target!r}")

    def lineage(self, target: str | None = None) -> list[Stage]:
        """The stage and the stages of this file it is built on, nearest first."""
        chain = [self.stage(target)]
        names = {s.name for s in self.stages}
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain

    def effective(self, instruction: str, target: str | None = None) -> str | None:
        """The value an image built to ``target`` has for an inherited instruction."""
        for stage in self.lineage(target):
            value = stage.last(instruction)
            if value is not None:
                return value
        return None

    def base_image(self, target: str | None = None) -> str:
        """The external image a stage finally builds on, ARGs substituted."""
        base = self.lineage(target)[-1].base
        return re.sub(
            r"\$\{?(\w+)\}?", lambda m: self.global_args.get(m.group(1), m.group(0)), base
        )


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined, comment lines dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return lines


def parse_dockerfile(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        instruction, _, arguments = line.partition(" ")
        instruction, arguments = instruction.upper(), arguments.strip()
        if instruction == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--")]  # --platform
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert instruction == "ARG", f"{path}: {instruction} before the first FROM"
            key, _, default = arguments.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((instruction, arguments))
    assert stages, f"{path} has no FROM"
    return Dockerfile(global_args, stages)


def environment(dockerfile: Dockerfile, target: str | None = None) -> dict[str, str]:
    """The ``ENV`` variables an image built to ``target`` has (``KEY=value`` form)."""
    variables: dict[str, str] = {}
    for stage in reversed(dockerfile.lineage(target)):
        for arguments in stage.all("ENV"):
            for word in shlex.split(arguments):
                key, equals, value = word.partition("=")
                assert equals, f"ENV {arguments}: use the KEY=value form"
                variables[key] = value
    return variables


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) instruction argument."""
    value = json.loads(arguments)
    assert isinstance(value, list), f"not an exec-form list: {arguments}"
    assert all(isinstance(item, str) for item in value), f"not a list of strings: {arguments}"
    return cast(list[str], value)


def healthcheck_command(arguments: str) -> list[str]:
    """The command of ``HEALTHCHECK [OPTIONS] CMD ...`` (exec form, or shell form as words)."""
    options, separator, command = arguments.partition("CMD ")
    assert separator, f"HEALTHCHECK without CMD: {arguments}"
    assert all(o.startswith("--") for o in options.split()), f"odd HEALTHCHECK options {options}"
    command = command.strip()
    return exec_form(command) if command.startswith("[") else shlex.split(command)


def pip_install_arguments(run: str) -> list[list[str]]:
    """The non-option arguments of every ``pip install`` in a RUN instruction."""
    found: list[list[str]] = []
    for part in re.split(r"&&|;|\|\|", run):
        words = shlex.split(part)
        for index, word in enumerate(words[:-1]):
            if word.endswith("pip") and words[index + 1] == "install":
                found.append([w for w in words[index + 2 :] if not w.startswith("-")])
    return found


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]
