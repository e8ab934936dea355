"""The storage-growth benchmark keeps working: ``python -m bench.growth --quick`` on the
machine's PostgreSQL. Tiny sizes, one run, nothing written in bench/; only that every
measure came out, and that the filled rows were there to measure against."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.growth import METRICS, QUICK

from .quick import run_quick


@pytest.mark.postgres
def test_the_quick_growth_benchmark_measures_everything(tmp_path: Path, postgres_dsn: str) -> None:
    results = run_quick("bench.growth", tmp_path / "growth.json", "--database-url", postgres_dsn)
    assert all(results[name] > 0 for name in METRICS)
    (run,) = results["runs"]
    assert run["rows"] == QUICK.rows
    assert run["commands_mb"] > 0
    assert run["events_mb"] > 0
    assert results["command"] == "python -m bench.growth --runs 1 --quick"
