"""The fence benchmark keeps working: ``python -m bench.fence --quick`` on the real database.

Tiny sizes, one run, nothing written in bench/; only that both functions committed
every change (the benchmark asserts each outcome) and every measure came out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fence import METRICS

from .quick import run_quick


@pytest.mark.postgres
def test_the_quick_fence_benchmark_measures_both_functions(
    tmp_path: Path, postgres_dsn: str
) -> None:
    results = run_quick("bench.fence", tmp_path / "fence.json", "--database-url", postgres_dsn)
    assert all(results[name] > 0 for name in METRICS)
    (run,) = results["runs"]
    assert run["ratio"] == pytest.approx(run["fenced_us"] / run["unfenced_us"])
