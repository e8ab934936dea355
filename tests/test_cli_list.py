"""``pachyderm list``, run in-process against a SQLite file: pages by id and by change."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from examples import bank
from pachyderm import App
from pachyderm._embedded import embedded
from pachyderm.cli import main


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


OWNERS = ("alice", "bob", "carol")


def seed(database: str) -> None:
    async def run() -> None:
        async with embedded(App([bank.Account]), database) as fleet:
            for owner in OWNERS:
                await fleet.client.call(bank.account(owner), bank.Open(owner=owner))
            await fleet.client.call(bank.account("alice"), bank.Deposit(amount=5))

    asyncio.run(run())


def listed(database: str, capsys: pytest.CaptureFixture[str], *options: str) -> dict[str, Any]:
    assert main(["--database-url", database, "list", "account", "--json", *options]) == 0
    page: dict[str, Any] = json.loads(capsys.readouterr().out)
    return page


def test_list_pages_by_id(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(database)
    first = listed(database, capsys, "--limit", "2")
    assert isinstance(first["next"], str)
    rest = listed(database, capsys, "--limit", "2", "--after", first["next"])
    assert rest["next"] is None
    pages = [first, rest]
    ids = [e["id"] for page in pages for e in page["entities"]]
    assert ids == sorted(str(bank.account(owner).id) for owner in OWNERS)


def test_list_by_change_as_text(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(database)
    argv = ["--database-url", database, "list", "account", "--by-change", "--limit", "2"]
    assert main([*argv, "--app", "examples.bank"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"account/{bank.account('bob').id}  v1 ")
    assert lines[1].startswith(f"account/{bank.account('carol').id}  v1 ")
    cursor = lines[2].split("--after ")[1].strip("'")
    assert main([*argv, "--after", cursor]) == 0
    (last,) = capsys.readouterr().out.splitlines()
    assert last.startswith(f"account/{bank.account('alice').id}  v2 ")


def test_list_refuses_a_bad_cursor_and_an_unknown_type(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(database)
    assert main(["--database-url", database, "list", "account", "--after", "x"]) == 1
    assert "a cursor by id is an entity id, not 'x'" in capsys.readouterr().err
    argv = ["--database-url", database, "list", "nope", "--app", "examples.bank"]
    assert main(argv) == 1
    assert "unknown entity type 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--database-url", database, "list", "account", "--limit", "0"])
