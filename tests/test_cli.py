"""The pachyderm command, run in-process against a SQLite file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from examples import bank
from pachyderm import App
from pachyderm._embedded import embedded
from pachyderm.cli import main
from pachyderm.store._migrations import migrations_for


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
