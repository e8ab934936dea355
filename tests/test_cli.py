"""The pachyderm command, run in-process against a SQLite file."""

from __future__ import annotations

import asyncio
import json
import logging
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from examples import bank
from pachyderm import App, Settings
from pachyderm._embedded import embedded
from pachyderm.cli import _dispatch, _gateway, _parser, _serve, main
from pachyderm.cli._arguments import _problems, settings_of
from pachyderm.store._migrations import migrations_for
from pachyderm.telemetry._logging import logging_configured


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def seed(database: str) -> None:
    async def run() -> None:
        async with embedded(App([bank.Account]), database) as fleet:
            alice = bank.account("alice")
            await fleet.client.call(alice, bank.Open(owner="Alice"), command_id="open-1")
            await fleet.client.call(alice, bank.Deposit(amount=250), command_id="dep-1")

    asyncio.run(run())


def test_migrate_reports_the_schema_version(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--database-url", database, "migrate"]) == 0
    assert main(["--database-url", database, "migrate"]) == 0
    out = capsys.readouterr().out.splitlines()
    latest = len(migrations_for("sqlite"))
    assert out == [f"schema of namespace 'pachyderm' is at version {latest}"] * 2


def test_inspect_shows_history_and_state(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(database)
    argv = ["--database-url", database, "inspect", "account", "alice", "--key"]
    assert main([*argv, "--app", "examples.bank"]) == 0
    out = capsys.readouterr().out
    assert f"account/{bank.account('alice').id} at version 2" in out
    assert 'Opened     {"owner": "Alice"}  [command open-1]' in out
    assert 'Deposited  {"amount": 250}  [command dep-1]' in out
    assert 'state: {"owner": "Alice", "balance": 250}' in out


def test_inspect_as_json_without_the_app(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(database)
    alice = str(bank.account("alice").id)
    argv = [
        "--database-url",
        database,
        "inspect",
        "account",
        alice,
        "--json",
        "--from-version",
        "2",
    ]
    assert main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["version"], shown["state"]) == (alice, 2, None)
    assert [(e["version"], e["name"], e["data"]) for e in shown["events"]] == [
        (2, "Deposited", {"amount": 250})
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect", "account", "alice"], "must be a UUID, got 'alice' (a natural key? add --key)"),
        (["inspect", "nope", "x", "--key", "--app", "examples.bank"], "unknown entity type 'nope'"),
        (["inspect", "account", "x", "--key", "--app", "no.such.module"], "cannot import"),
    ],
)
def test_mistakes_are_explained_with_exit_status_one(
    database: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--database-url", database, *argv]) == 1
    assert message in capsys.readouterr().err


# --- the command line as its neighbours shape theirs --------------------------


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"pachyderm {version('pachyderm-entities')}\n"


def test_global_options_are_taken_after_the_subcommand_too(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--database-url", database, "--namespace", "after"]) == 0
    # One given before the subcommand stays when none is given after it.
    assert main(["--namespace", "before", "migrate", "--database-url", database]) == 0
    # Given in both places, the later one wins.
    assert (
        main(["--namespace", "x", "--database-url", database, "migrate", "--namespace", "y"]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert [line.split("'")[1] for line in out] == ["after", "before", "y"]


@pytest.mark.parametrize("place", ["before", "after"])
def test_the_log_level_option_overrides_the_configured_one(
    place: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACHYDERM_LOG_LEVEL", "error")
    assert settings_of(_parser().parse_args(["topology"])).log_level == "error"
    argv = ["--log-level", "debug", "topology"]
    if place == "after":
        argv = ["topology", "--log-level", "debug"]
    settings = settings_of(_parser().parse_args(argv))
    assert settings.log_level == "debug"
    root = logging.getLogger()
    with logging_configured(settings):
        assert root.level == logging.DEBUG
    with logging_configured(settings.model_copy(update={"log_level": "warning"})):
        assert root.level == logging.WARNING


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """What each serving subcommand was asked to serve, instead of serving it."""
    monkeypatch.delenv("PACHYDERM_APP", raising=False)
    seen: list[tuple[str, str | None]] = []

    def recorder(name: str) -> Any:
        async def record(settings: Settings, app_spec: str | None, *_: Any) -> None:
            seen.append((name, app_spec))

        return record

    monkeypatch.setattr(_serve, "serve", recorder("worker"))
    monkeypatch.setattr(_dispatch, "run_effects", recorder("effects"))
    monkeypatch.setattr(_gateway, "run_gateway", recorder("gateway"))
    monkeypatch.setattr(_gateway, "run_dev", recorder("dev"))
    return seen


@pytest.mark.parametrize("command", ["worker", "effects", "dev", "gateway"])
def test_the_app_is_pachyderm_app_unless_the_command_line_names_one(
    command: str, started: list[tuple[str, str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    named = ["--app", "examples.bank"] if command == "gateway" else ["examples.bank"]
    assert main([command, *named]) == 0
    monkeypatch.setenv("PACHYDERM_APP", "examples.demo:APP")
    assert main([command]) == 0
    assert main([command, *named]) == 0
    assert started == [
        (command, "examples.bank"),
        (command, "examples.demo:APP"),
        (command, "examples.bank"),
    ]


def test_the_gateway_serves_no_app_when_none_is_named(
    started: list[tuple[str, str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["gateway"]) == 0
    monkeypatch.setenv("PACHYDERM_APP", "")  # as the Kubernetes manifest clears it
    assert main(["gateway"]) == 0
    assert started == [("gateway", None), ("gateway", None)]


@pytest.mark.parametrize("command", ["worker", "effects", "dev"])
def test_a_serving_command_without_an_app_is_a_usage_mistake(
    command: str, started: list[tuple[str, str | None]], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith(
        f"pachyderm {command}: error: name the app (module[:attribute]) or set PACHYDERM_APP\n"
    )
    assert started == []


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ("{to: ops}", "not JSON: Expecting property name enclosed in double quotes"),
        ('["ops"]', "must be a JSON object, got list"),
    ],
)
def test_bad_effects_config_is_a_usage_mistake(
    config: str,
    problem: str,
    started: list[tuple[str, str | None]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["effects", "examples.demo:APP", "--config", config])
    assert exited.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"pachyderm effects: error: argument --config: {problem}")
    assert started == []


def test_the_effects_config_reaches_the_dispatcher(
    started: list[tuple[str, str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    given: list[Any] = []

    async def record(settings: Settings, app_spec: str, config: Any, group: str) -> None:
        given.append((app_spec, config, group))

    monkeypatch.setattr(_dispatch, "run_effects", record)
    argv = ["effects", "examples.demo:APP", "--config", '{"to": "ops@example.com"}']
    assert main(argv) == 0
    assert main(["effects", "examples.demo:APP", "--group", "mail"]) == 0
    assert given == [
        ("examples.demo:APP", {"to": "ops@example.com"}, "handlers"),
        ("examples.demo:APP", {}, "mail"),
    ]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "PACHYDERM_NAMESPACE",
            "Bad Name",
            "PACHYDERM_NAMESPACE: must match [a-z_][a-z0-9_]{0,62}, got 'Bad Name'",
        ),
        (
            "PACHYDERM_PARTITIONS",
            "many",
            "PACHYDERM_PARTITIONS: input should be a valid integer, unable to parse string"
            " as an integer, got 'many'",
        ),
    ],
)
def test_an_invalid_setting_is_one_line_naming_its_variable(
    variable: str,
    value: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["migrate"]) == 1
    assert capsys.readouterr().err == f"pachyderm: {message}\n"


def test_an_invalid_namespace_option_is_reported_as_its_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["migrate", "--namespace", "Team-A"]) == 1
    err = capsys.readouterr().err
    assert err == "pachyderm: PACHYDERM_NAMESPACE: must match [a-z_][a-z0-9_]{0,62}, got 'Team-A'\n"


def test_an_invalid_secret_setting_is_reported_without_its_value() -> None:
    problems = _problems_of({"database_url": 42, "gateway_token": ["hunter2"]})
    assert problems == [
        "PACHYDERM_DATABASE_URL: input should be a valid string",
        "PACHYDERM_GATEWAY_TOKEN: input should be a valid string",
    ]


def _problems_of(values: dict[str, Any]) -> list[str]:
    try:
        Settings.model_validate(values)
    except ValidationError as error:
        return _problems(error)
    raise AssertionError("valid settings")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("examples.bank:nope", "app module 'examples.bank' has no attribute 'nope'"),
        ("examples.nowhere", "cannot import app module 'examples.nowhere': no module named"),
        ("examples.bank:Account", "'examples.bank:Account' is not a pachyderm.App"),
        (":app", "':app' is not module[:attribute], e.g. myapp:app"),
    ],
)
def test_an_app_that_is_not_there_is_one_line_saying_why(
    spec: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dev", spec]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"pachyderm: {message}")
    assert err.count("\n") == 1
