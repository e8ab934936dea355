"""``pachyderm prune [--dry-run]``: what an operator runs, with the workers' settings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pachyderm.cli import main

from .test_pruning import OLD_ATTEMPTS, OLD_COMMANDS, OLD_EFFECTS, OLD_SKIPPED, backdate_sqlite


def _left(path: Path) -> tuple[int, int]:
    connection = sqlite3.connect(path)
    try:
        (commands,) = connection.execute("SELECT count(*) FROM commands").fetchone()
        (effects,) = connection.execute("SELECT count(*) FROM outbox").fetchone()
    finally:
        connection.close()
    return commands, effects


def test_prune_counts_with_dry_run_then_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ops.db"
    database = ["--database-url", f"sqlite:///{path}"]
    assert main([*database, "migrate"]) == 0
    backdate_sqlite(path, OLD_COMMANDS, OLD_EFFECTS)
    monkeypatch.setenv("PACHYDERM_COMMAND_RETENTION", "7200")
    monkeypatch.setenv("PACHYDERM_COMMAND_EXPIRY_MARGIN", "60")
    monkeypatch.setenv("PACHYDERM_PRUNE_BATCH", "300")
    capsys.readouterr()

    assert main([*database, "prune", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"would prune {OLD_COMMANDS} commands older than 7200s",
        f"would prune {OLD_EFFECTS} effects older than 86400s",
        f"would prune {OLD_ATTEMPTS} attempts older than 7200s",
        f"would prune {OLD_SKIPPED} quarantine older than 7200s",
    ]
    assert _left(path) == (OLD_COMMANDS, OLD_EFFECTS + 1)

    assert main([*database, "prune"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"pruned {OLD_COMMANDS} commands older than 7200s",
        f"pruned {OLD_EFFECTS} effects older than 86400s",
        f"pruned {OLD_ATTEMPTS} attempts older than 7200s",
        f"pruned {OLD_SKIPPED} quarantine older than 7200s",
    ]
    assert _left(path) == (0, 1)  # the effect never published stays


def test_a_margin_as_long_as_the_window_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PACHYDERM_COMMAND_RETENTION", "600")
    assert main(["--database-url", f"sqlite:///{tmp_path / 'x.db'}", "prune"]) == 1
    assert capsys.readouterr().err.strip() == (
        "pachyderm: PACHYDERM_COMMAND_EXPIRY_MARGIN: value error, must be shorter than"
        " PACHYDERM_COMMAND_RETENTION (600 seconds), got 3600.0"
    )
