"""``pachyderm quarantine list|show|resume|skip``, in process against a SQLite file."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path

import pytest

from pachyderm import Ref
from pachyderm._stored_messages import encode_message
from pachyderm._wire import command_message
from pachyderm.cli import main
from pachyderm.store import Quarantined, SqliteEventStore

from .poison_app import APP, Step


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def quarantine(database: str, ref: Ref, command_id: str) -> None:
    """As a worker records a poison command."""

    async def run() -> None:
        store = await SqliteEventStore.open(database.removeprefix("sqlite:///"))
        try:
            await store.migrate()
            message = command_message(APP, ref, Step(5), command_id=command_id)
            row = Quarantined(
                ref.id,
                command_id,
                "lane",
                2,
                "park",
                "quarantined",
                3,
                "hung",
                encode_message(message),
            )
            await store.quarantine_store().quarantine([row])
        finally:
            await store.close()

    asyncio.run(run())


def test_list_show_and_decide(
    database: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    ref = Ref("lane", uuid.uuid4())
    quarantine(database, ref, "c-1")
    argv = ["--database-url", database, "quarantine"]
    assert main([*argv, "list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["entity_id"], listed["command_id"], listed["status"]) == (
        str(ref.id),
        "c-1",
        "quarantined",
    )
    assert (listed["attempts"], listed["policy"], listed["parked"]) == (3, "park", 0)
    assert main([*argv, "show", str(ref.id), "c-1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["command"]["name"] == "Step"
    assert shown["command"]["fields"] == {"n": 5}
    with caplog.at_level(logging.WARNING, logger="pachyderm.audit"):
        assert main([*argv, "skip", str(ref.id), "c-1"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "skipping"
    assert "asked to skip command c-1" in caplog.text
    # Decided already: a second decision is refused, and says why.
    assert main([*argv, "resume", str(ref.id), "c-1"]) == 1
    assert "waits for a decision" in capsys.readouterr().err


def test_empty_list_and_bad_ids(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--database-url", database, "migrate"]) == 0
    capsys.readouterr()
    argv = ["--database-url", database, "quarantine"]
    assert main([*argv, "list"]) == 0
    assert capsys.readouterr().out.strip() == "no quarantined commands"
    assert main([*argv, "show", "not-a-uuid", "c"]) == 1
    assert "not an entity id" in capsys.readouterr().err
    assert main([*argv, "resume"]) == 1
    assert "needs ENTITY_ID COMMAND_ID" in capsys.readouterr().err
    assert main([*argv, "show", str(uuid.uuid4()), "c"]) == 1
    assert "is quarantined" in capsys.readouterr().err
