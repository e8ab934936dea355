"""``pachyderm projection status|pause|resume|rebuild`` against a SQLite file the runners use."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from pachyderm.cli import main
from pachyderm.projections import ProjectionRunner, SqliteCursors
from pachyderm.store import SqliteEventStore

from . import tally

APP_SPEC = "tests.projections.tally:APP"


class Database:
    """A migrated SQLite file, and the runners of ``tally.APP``'s recorder over it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.entity = uuid.uuid4()
        self.version = 0

    def _run(self, work: Any) -> Any:
        async def session() -> Any:
            store = await SqliteEventStore.open(self.path)
            cursors = await SqliteCursors.open(str(self.path))
            try:
                return await work(store, cursors)
            finally:
                await cursors.close()
                await store.close()

        return asyncio.run(session())

    def migrate(self) -> None:
        async def work(store: Any, _: Any) -> None:
            await store.migrate()

        self._run(work)

    def add(self, *amounts: int) -> None:
        async def work(store: Any, _: Any) -> None:
            for amount in amounts:
                await tally.commit(store, tally.APP, self.entity, self.version, tally.Added(amount))
                self.version += 1

        self._run(work)

    def step(self) -> int:
        """One batch of the recorder's runner on the tally's partition."""

        async def work(store: Any, cursors: Any) -> int:
            await cursors.ensure("recorder", 4)
            runner = ProjectionRunner(
                tally.APP, store, cursors, tally.RECORDER, self.entity.int % 4
            )
            moved: int = await runner.step()
            return moved

        moved: int = self._run(work)
        return moved

    def status(self, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
        capsys.readouterr()
        assert main(["--database-url", self.url, "projection", "status", "--json"]) == 0
        [mine] = [
            row
            for row in json.loads(capsys.readouterr().out)
            if row["partition"] == self.entity.int % 4
        ]
        return dict(mine)

    def command(self, *argv: str) -> int:
        return main(["--database-url", self.url, "projection", *argv])


@pytest.fixture
def database(tmp_path: Path) -> Database:
    database = Database(tmp_path / "events.db")
    database.migrate()
    tally.RECORDER.seen.clear()
    return database


def test_status_pause_resume_and_rebuild(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    database.add(1, 2, 3)
    assert database.step() == 3
    assert database.status(capsys) | {"lag_seconds": 0} == {
        "projection": "recorder",
        "partition": database.entity.int % 4,
        "position": 3,
        "head": 3,
        "lag_events": 0,
        "lag_seconds": 0,
        "paused": False,
        "rebuilding": False,
    }
    assert database.command("pause", "recorder") == 0
    assert "projection recorder paused (4 partitions)" in capsys.readouterr().out
    database.add(4)
    assert database.step() == 0  # paused: nothing applied
    status = database.status(capsys)
    assert (status["paused"], status["lag_events"]) == (True, 1)
    assert status["lag_seconds"] >= 0
    assert database.command("resume", "recorder") == 0
    assert database.step() == 1
    assert [amount for *_, amount in tally.RECORDER.seen] == [1, 2, 3, 4]

    assert database.command("rebuild", "recorder") == 0
    assert database.status(capsys)["rebuilding"]
    assert database.step() == 0  # clears the read model, resets the cursors
    assert tally.RECORDER.seen == []
    assert database.status(capsys) | {"lag_seconds": 0} == {
        "projection": "recorder",
        "partition": database.entity.int % 4,
        "position": 0,
        "head": 4,
        "lag_events": 4,
        "lag_seconds": 0,
        "paused": False,
        "rebuilding": False,
    }
    assert database.step() == 4
    assert [amount for *_, amount in tally.RECORDER.seen] == [1, 2, 3, 4]


def test_a_name_that_never_ran_is_refused_unless_the_app_has_it(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    assert database.command("pause", "nothing") == 1
    assert "no projection 'nothing' has run" in capsys.readouterr().err
    assert database.command("pause", "nothing", "--app", APP_SPEC) == 1
    assert "unknown projection 'nothing'" in capsys.readouterr().err
    # Known to the app: paused before it ever runs, so its runners start paused.
    assert database.command("pause", "recorder", "--app", APP_SPEC) == 0
    assert database.status(capsys)["paused"]
    assert database.command("resume") == 1
    assert "name the projection to resume" in capsys.readouterr().err


def test_the_projection_process_refuses_an_app_without_projections(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--database-url", database.url, "projections", "examples.bank"]
    assert main(argv) == 1
    assert "has no projections to run" in capsys.readouterr().err


def test_status_as_text_has_a_row_per_cursor(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    assert database.command("status") == 0
    assert capsys.readouterr().out == "no projection has run yet\n"
    database.add(1, 2)
    assert database.step() == 2
    assert database.command("status", "recorder") == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "projection",
        "partition",
        "position",
        "head",
        "lag",
        "lag",
        "(s)",
        "state",
    ]
    assert len(rows) == 4
    mine = database.entity.int % 4
    assert rows[mine].split()[:5] == ["recorder", str(mine), "2", "2", "0"]
    assert rows[mine].split()[-1] == "running"
