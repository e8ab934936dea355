"""The Dockerfile, read without Docker: one build of the library, an image per deployable.

Its targets are the worker image (``worker``, the default, and ``examples``)
and the gateway image (``gateway``); both rest on its one build stage and
share its runtime stage. Each image installs the project from the
repository's own files, runs as an unprivileged user, stops on SIGTERM,
probes its own health port with the standard library and holds no secret;
.dockerignore keeps the context lean.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pachyderm import Settings

from .manifests import (
    DOCKERFILE,
    ROOT,
    SECRET_SETTINGS,
    Dockerfile,
    cli_error,
    dockerignore_patterns,
    environment,
    exec_form,
    healthcheck_command,
    parse_dockerfile,
    pip_install_arguments,
)

BASE_IMAGE = "python:3.11-slim"
# (target built, the setting naming the port its HEALTHCHECK probes)
IMAGES = [("worker", "health_port"), ("examples", "health_port"), ("gateway", "gateway_port")]
IMAGE_IDS = [target for target, _ in IMAGES]
# The home of each deployable: its README tells how to build its target.
HOMES = {"worker": ROOT / "workers" / "README.md", "gateway": ROOT / "gateway" / "README.md"}
# Where a copy of the build could hide; the rest is not the images' business.
_NOT_SOURCES = {".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis"}


def _default_port(setting: str) -> int:
    default = Settings.model_fields[setting].default
    assert isinstance(default, int)
    return default


def _installs(dockerfile: Dockerfile) -> list[tuple[str | None, list[str]]]:
    """Every ``pip install`` of the file: (its stage, its arguments)."""
    return [
        (stage.name, arguments)
        for stage in dockerfile.stages
        for run in stage.all("RUN")
        for arguments in pip_install_arguments(run)
    ]


def _copied_from(dockerfile: Dockerfile, target: str) -> list[str]:
    """The stages whose files an image built to ``target`` copies (``COPY --from``)."""
    return [
        copy.split()[0].removeprefix("--from=")
        for stage in dockerfile.lineage(target)
        for copy in stage.all("COPY")
        if copy.startswith("--from=")
    ]


def test_builds_in_stages_on_python_3_11_slim() -> None:
    dockerfile = parse_dockerfile(DOCKERFILE)
    assert len(dockerfile.stages) >= 2, "build and runtime stages"
    for stage in dockerfile.stages:
        assert dockerfile.base_image(stage.name) == BASE_IMAGE, stage.name
    # Each image gets the installed virtualenv, not the build's tools and sources.
    for target in IMAGE_IDS:
        assert _copied_from(dockerfile, target) == ["build"], target


def test_the_build_is_defined_once_and_every_image_rests_on_it() -> None:
    dockerfile = parse_dockerfile(DOCKERFILE)
    # One stage installs the project; no image target repeats that work.
    assert [stage for stage, _ in _installs(dockerfile)] == ["build"]
    names = [stage.name for stage in dockerfile.stages]
    assert names.count("build") == 1
    # The worker and gateway images share the runtime stage (user, virtualenv,
    # entrypoint), so they differ only in what their own stages add.
    for target in IMAGE_IDS:
        lineage = [stage.name for stage in dockerfile.lineage(target)]
        assert lineage[-1] == "runtime", (target, lineage)
        assert "build" not in lineage, "an image must not carry the build's tools"
    # And no second Dockerfile builds the library again somewhere else.
    dockerfiles = [
        path.relative_to(ROOT).as_posix()
        for top in ROOT.iterdir()
        if top.name not in _NOT_SOURCES
        for path in ([top] if top.is_file() else top.rglob("*"))
        if path.is_file() and re.fullmatch(r"(.+\.)?Dockerfile(\..+)?", path.name)
    ]
    assert dockerfiles == ["Dockerfile"]


@pytest.mark.parametrize(("target", "readme"), HOMES.items(), ids=HOMES)
def test_each_deployable_s_folder_tells_how_to_build_its_image(target: str, readme: Path) -> None:
    parse_dockerfile(DOCKERFILE).stage(target)  # the target exists
    assert f"docker build --target {target} " in readme.read_text()


def test_installs_the_project_from_the_repository_not_a_package_list() -> None:
    dockerfile = parse_dockerfile(DOCKERFILE)
    # Exactly one install, of the build context: dependencies come from pyproject.toml.
    assert [arguments for _, arguments in _installs(dockerfile)] == [["."]]
    sources = [
        word
        for stage in dockerfile.stages
        for copy in stage.all("COPY")
        if not copy.startswith("--from=")
        for word in copy.split()[:-1]
        if not word.startswith("--")
    ]
    assert {"pyproject.toml", "README.md", "shared/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


@pytest.mark.parametrize(("target", "port_setting"), IMAGES, ids=IMAGE_IDS)
def test_runs_as_a_numeric_non_root_user(target: str, port_setting: str) -> None:
    user = parse_dockerfile(DOCKERFILE).effective("USER", target)
    assert user is not None, "no USER: the image would run as root"
    uid, _, gid = user.partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can check it.
    assert uid.isdigit(), user
    assert int(uid) > 0, user
    assert gid.isdigit() or not gid, user
    assert int(gid or 1) > 0, user


@pytest.mark.parametrize(("target", "port_setting"), IMAGES, ids=IMAGE_IDS)
def test_stops_on_sigterm_and_probes_its_health_port_with_python(
    target: str, port_setting: str
) -> None:
    dockerfile = parse_dockerfile(DOCKERFILE)
    assert dockerfile.effective("STOPSIGNAL", target) == "SIGTERM"
    healthcheck = dockerfile.effective("HEALTHCHECK", target)
    assert healthcheck is not None
    assert healthcheck.upper() != "NONE"
    command = healthcheck_command(healthcheck)
    assert command[:2] == ["python", "-c"], "no curl in the slim image: use python"
    assert "urllib.request" in command[2]
    assert "/healthz" in command[2]
    variable = f"PACHYDERM_{port_setting.upper()}"
    default = _default_port(port_setting)
    assert f"os.environ.get('{variable}', '{default}')" in command[2]
    # Its own port only: EXPOSE accumulates down the stages, so a port the
    # shared stages exposed would show on the other image too.
    exposed = {
        int(port.split("/")[0])
        for stage in dockerfile.lineage(target)
        for ports in stage.all("EXPOSE")
        for port in ports.split()
    }
    assert exposed == {default}
    compile(command[2], "HEALTHCHECK", "exec")  # valid Python


@pytest.mark.parametrize(("target", "port_setting"), IMAGES, ids=IMAGE_IDS)
def test_runs_the_pachyderm_command(target: str, port_setting: str) -> None:
    dockerfile = parse_dockerfile(DOCKERFILE)
    entrypoint = dockerfile.effective("ENTRYPOINT", target)
    assert entrypoint is not None
    assert exec_form(entrypoint) == ["pachyderm"]
    cmd = dockerfile.effective("CMD", target)
    assert cmd is not None
    arguments = exec_form(cmd)
    assert cli_error(arguments) is None, f"CMD {arguments}: {cli_error(arguments)}"


def test_the_default_commands_are_help_worker_demo_and_gateway() -> None:
    dockerfile = parse_dockerfile(DOCKERFILE)
    # `docker build .` gives the worker image, which users build FROM.
    assert dockerfile.stage().name == "worker"
    assert exec_form(dockerfile.effective("CMD", "worker") or "") == ["--help"]
    assert exec_form(dockerfile.effective("CMD", "examples") or "") == [
        "worker",
        "examples.demo:APP",
    ]
    assert exec_form(dockerfile.effective("CMD", "gateway") or "") == ["gateway"]
    # The app modules live in the working directory, which is on the path.
    assert dockerfile.effective("WORKDIR", "examples") == "/app"
    assert environment(dockerfile, "examples")["PYTHONPATH"] == "/app"
    assert "COPY examples/ /app/examples/" in [
        f"COPY {c}" for c in dockerfile.stage("examples").all("COPY")
    ]


def test_the_gateway_image_listens_on_every_interface() -> None:
    variables = environment(parse_dockerfile(DOCKERFILE), "gateway")
    assert variables["PACHYDERM_GATEWAY_HOST"] == "0.0.0.0"
    assert int(variables["PACHYDERM_GATEWAY_PORT"]) == _default_port("gateway_port")
    # Gateway settings are the gateway's: the worker image does not carry them.
    assert "PACHYDERM_GATEWAY_HOST" not in environment(parse_dockerfile(DOCKERFILE), "worker")


@pytest.mark.parametrize("target", ["worker", "examples"])
def test_the_worker_images_serve_health_on_every_interface(target: str) -> None:
    # The library's default, loopback, is out of reach of probes and scrapers.
    variables = environment(parse_dockerfile(DOCKERFILE), target)
    assert variables["PACHYDERM_HEALTH_HOST"] == "0.0.0.0"


def test_no_secret_is_baked_in() -> None:
    dockerfile = parse_dockerfile(DOCKERFILE)
    secret_variables = {f"PACHYDERM_{name.upper()}" for name in SECRET_SETTINGS}
    names = set(dockerfile.global_args)
    for stage in dockerfile.stages:
        names |= set(environment(dockerfile, stage.name))
        names |= {a.partition("=")[0] for a in stage.all("ARG")}
    assert not names & secret_variables
    assert not [n for n in names if re.search(r"PASSWORD|TOKEN|SECRET", n)], names
    text = DOCKERFILE.read_text()
    assert not re.search(r"\w+://[^\s/:@]+:[^\s/@]+@", text), "credentials in a URL"
    for stage in dockerfile.stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            assert ".env" not in copy.split(), copy


def _pattern_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regex: Go's filepath.Match, plus ``**`` for any depth."""
    segments = pattern.strip("/").split("/")
    regex = ""
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
            continue
        for token in re.findall(r"\[[^\]]*\]|.", segment):
            if token == "*":
                regex += "[^/]*"
            elif token == "?":
                regex += "[^/]"
            elif token.startswith("[") and len(token) > 1:
                regex += token
            else:
                regex += re.escape(token)
        regex += "" if last else "/"
    return regex


def _ignored(patterns: list[str], path: str) -> bool:
    """Whether .dockerignore excludes ``path`` (the last matching pattern wins; ``!`` keeps)."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        regex = _pattern_regex(pattern.removeprefix("!"))
        # A pattern matching a parent folder excludes everything under it.
        if any(re.fullmatch(regex, "/".join(parts[: i + 1])) for i in range(len(parts))):
            ignored = not pattern.startswith("!")
    return ignored


def test_dockerignore_excludes_local_clutter_but_keeps_what_the_images_copy() -> None:
    patterns = dockerignore_patterns()
    for unwanted in [
        ".venv/bin/python",
        ".git/HEAD",
        "shared/pachyderm/__pycache__/x.pyc",
        "shared/pachyderm_entities.egg-info/PKG-INFO",
        ".mypy_cache/x",
        ".pytest_cache/x",
        ".ruff_cache/x",
        ".hypothesis/x",
        "pachyderm.db",
        "examples/pachyderm.db-wal",
        ".env",
    ]:
        assert _ignored(patterns, unwanted), f"{unwanted} would be sent to the build"
    for needed in [
        "pyproject.toml",
        "README.md",
        "shared/pachyderm/__init__.py",
        "shared/pachyderm/store/migrations/postgres/0001_initial.sql",
        "examples/demo.py",
    ]:
        assert not _ignored(patterns, needed), f".dockerignore drops {needed}"


def test_the_dockerfile_reader_sees_through_continuations_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(
        "ARG BASE=python:3.11-slim\nFROM ${BASE} AS one\n# a comment\nRUN a \\\n"
        "    # inside\n    && pip install . \\\n    && b\nFROM one\nUSER 1:1\n"
    )
    parsed: Dockerfile = parse_dockerfile(path)
    assert [s.name for s in parsed.stages] == ["one", None]
    assert parsed.base_image() == "python:3.11-slim"
    assert pip_install_arguments(parsed.stage("one").all("RUN")[0]) == [["."]]
    assert parsed.effective("USER") == "1:1"
