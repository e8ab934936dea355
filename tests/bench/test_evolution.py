"""The evolution benchmark keeps working: ``python -m bench.evolution --quick`` on the
machine's PostgreSQL. Tiny sizes, one run, nothing written in bench/; only that every
measure came out and the run's checks held (its exit status: the two ledgers fold to
the same balance, the replay check found no problem and read every event)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.evolution import METRICS, QUICK

from .quick import run_quick


@pytest.mark.postgres
def test_the_quick_evolution_benchmark_measures_everything(
    tmp_path: Path, postgres_dsn: str
) -> None:
    results = run_quick(
        "bench.evolution", tmp_path / "evolution.json", "--database-url", postgres_dsn
    )
    assert all(results[name] > 0 for name in METRICS)
    (run,) = results["runs"]
    assert run["replay_check_events"] == QUICK.entities * QUICK.events_each + QUICK.history
    assert results["command"] == "python -m bench.evolution --runs 1 --quick"
