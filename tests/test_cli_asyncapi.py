"""``pachyderm asyncapi``: an app's AsyncAPI document, valid by the official schemas,
from the generic document the package ships (in a wheel too, away from the repository)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples import bank
from pachyderm.cli import main

from .asyncapi.document import DOCUMENT, message, official_errors, resolve
from .python_process import ROOT, run_python

# Each output format: its option, and what parses it.
FORMATS: dict[str, tuple[list[str], Callable[[str], Any]]] = {
    "yaml": ([], yaml.safe_load),
    "json": (["--json"], json.loads),
}


def printed(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    """The document ``pachyderm ARGV`` prints, parsed as the format it was asked for."""
    assert main(argv) == 0
    out = capsys.readouterr().out
    return FORMATS["json" if "--json" in argv else "yaml"][1](out)


def assert_is_the_bank_s(spec: Any) -> None:
    assert official_errors(spec) == []
    deposit = message(spec, "account.command.Deposit")
    payload = resolve(spec, deposit["payload"])
    assert payload["properties"] == {"amount": {"type": "integer", "exclusiveMinimum": 0}}
    published = spec["channels"]["pachyderm.commands"]["publish"]["message"]["oneOf"]
    names = {reference["$ref"].rsplit("/", 1)[1] for reference in published}
    (account,) = bank.app
    assert names == {
        *(f"account.command.{name}" for name in account.commands.names),
        *(f"account.query.{name}" for name in account.queries.names),
        "Query",
    }
    assert "account.command.Deposit" in names


@pytest.mark.parametrize("form", FORMATS)
def test_the_document_of_the_named_app_is_valid_with_its_messages(
    form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_is_the_bank_s(printed(["asyncapi", "examples.bank", *FORMATS[form][0]], capsys))


def test_yaml_and_json_are_the_same_document(capsys: pytest.CaptureFixture[str]) -> None:
    as_yaml = printed(["asyncapi", "examples.bank"], capsys)
    assert as_yaml == printed(["asyncapi", "examples.bank", "--json"], capsys)


def test_the_app_is_pachyderm_app_unless_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PACHYDERM_APP", "examples.bank")
    assert_is_the_bank_s(printed(["asyncapi"], capsys))
    demo = printed(["asyncapi", "examples.demo:APP"], capsys)
    assert "counter.command.Increment" in demo["components"]["messages"]


def test_an_unknown_app_is_one_line_and_status_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asyncapi", "examples.nowhere"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("pachyderm: cannot import app module 'examples.nowhere'")
    assert captured.err.count("\n") == 1


def test_no_app_is_a_usage_mistake(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PACHYDERM_APP", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["asyncapi"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith(
        "pachyderm asyncapi: error: name the app (module[:attribute]) or set PACHYDERM_APP\n"
    )


def test_a_wheel_ships_the_document_the_command_prints_from(tmp_path: Path) -> None:
    # Built from a copy of what a build reads, so the work tree gets no build/ folder.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignored = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "shared", source / "shared", ignore=ignored)
    build = ["wheel", "-q", "--no-deps", "--no-build-isolation", ".", "-w", str(tmp_path / "w")]
    subprocess.run(
        [sys.executable, "-m", "pip", *build],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = (tmp_path / "w").glob("*.whl")
    installed = tmp_path / "installed"
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("pachyderm/gateway/asyncapi.yaml") == DOCUMENT.read_bytes()
        archive.extractall(installed)
    # The installed build before the work tree's package; examples/ from the root.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PACHYDERM_")}
    environment["PYTHONPATH"] = str(installed)
    finished = run_python(
        "-c",
        "import sys, pachyderm.cli; print(pachyderm.cli.__file__, file=sys.stderr);"
        " sys.exit(pachyderm.cli.main(sys.argv[1:]))",
        "asyncapi",
        "examples.bank",
        env=environment,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stderr.strip().startswith(str(installed))
    assert_is_the_bank_s(yaml.safe_load(finished.stdout))
