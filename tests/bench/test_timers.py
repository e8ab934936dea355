"""The timers benchmark keeps working: ``python -m bench.timers --quick`` on the real services.

Tiny sizes, one run, nothing written in bench/; only that every measure came
out, that every timer fired and none early (the run's exit status), and that
the results page keeps the other sections when the Timers section is rewritten.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.standalone import replaced_section
from bench.timers import METRICS, SECTION

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_the_quick_timers_benchmark_measures_everything(
    tmp_path: Path, postgres_dsn: str, rabbitmq_url: str
) -> None:
    output = tmp_path / "timers.json"
    command = [sys.executable, "-m", "bench.timers", "--quick", "--json-out", str(output)]
    command += ["--database-url", postgres_dsn, "--amqp-url", rabbitmq_url]
    finished = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-4000:]
    results = json.loads(output.read_text())

    assert all(results[name] > 0 for name in METRICS)
    (run,) = results["runs"]
    for phase in run["phases"].values():
        assert phase["fired"] == phase["expected"]
        assert phase["early"] == 0


def test_the_timers_section_is_replaced_and_the_rest_of_the_page_kept() -> None:
    before, after = "# Title\n\n## Before\n\nkept\n\n", "\n## After\n\nalso kept\n"
    page = f"{before}{SECTION}\n\nold\n{after}"
    assert (
        replaced_section(page, SECTION, f"{SECTION}\n\nnew\n")
        == f"{before}{SECTION}\n\nnew\n{after}"
    )
    assert (
        replaced_section("# Title\n", SECTION, f"{SECTION}\n\nnew\n")
        == f"# Title\n\n{SECTION}\n\nnew\n"
    )
