"""The timers benchmark keeps working: ``python -m bench.timers --quick`` on the real services.

Tiny sizes, one run, nothing written in bench/; only that every measure came
out, in both namespaces (one with the pending timers inserted, one without),
that every timer fired and none early (the run's exit status), and that
the results page keeps the other sections when the Timers section is rewritten.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.standalone import replaced_section
from bench.timers import METRICS, SECTION

from .quick import run_quick


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_the_quick_timers_benchmark_measures_everything(
    tmp_path: Path, postgres_dsn: str, rabbitmq_url: str
) -> None:
    services = ["--database-url", postgres_dsn, "--amqp-url", rabbitmq_url]
    results = run_quick("bench.timers", tmp_path / "timers.json", *services)

    assert all(results[name] > 0 for name in METRICS)
    (run,) = results["runs"]
    plain, loaded = run["namespaces"]["plain"], run["namespaces"]["with_pending"]
    assert (plain["pending"], loaded["pending"]) == (0, run["pending"])
    for phase in [*plain["phases"].values(), *loaded["phases"].values()]:
        assert phase["fired"] == phase["expected"]
        assert phase["early"] == 0
    # What the database did in each steady window: some WAL at least (the fires' commits).
    for namespace in (plain, loaded):
        io = namespace["phases"]["steady"]["io"]
        assert io["wal_mb"] > 0
        assert io["blocks_read"] >= io["timers_blocks_read"] >= 0


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
