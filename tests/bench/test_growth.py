"""The storage-growth benchmark keeps working: ``python -m bench.growth --quick`` on the
machine's PostgreSQL. Tiny sizes, one run, nothing written in bench/; only that every
measure came out, and that the filled rows were there to measure against."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.growth import METRICS, QUICK

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_the_quick_growth_benchmark_measures_everything(tmp_path: Path, postgres_dsn: str) -> None:
    output = tmp_path / "growth.json"
    command = [sys.executable, "-m", "bench.growth", "--quick", "--json-out", str(output)]
    finished = subprocess.run(
        [*command, "--database-url", postgres_dsn],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-4000:]
    results = json.loads(output.read_text())
    assert all(results[name] > 0 for name in METRICS)
    (run,) = results["runs"]
    assert run["rows"] == QUICK.rows
    assert run["commands_mb"] > 0
    assert run["events_mb"] > 0
    assert results["command"] == "python -m bench.growth --runs 1 --quick"
