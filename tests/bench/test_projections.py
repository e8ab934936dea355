"""The projections benchmark keeps working: ``python -m bench.projections --quick``.

Tiny sizes, one run, nothing written in bench/; only that every measure came
out, that no call failed and the read model matched the log (the run's exit
status, and the run's own record), and that the results page keeps the other
sections when the Projections section is rewritten.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.projections import METRICS, SECTION
from bench.standalone import replaced_section
from bench.workloads.projections import without_log_step

from .quick import run_quick


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_the_quick_projections_benchmark_measures_everything(
    tmp_path: Path, postgres_dsn: str, rabbitmq_url: str
) -> None:
    services = ["--database-url", postgres_dsn, "--amqp-url", rabbitmq_url]
    results = run_quick("bench.projections", tmp_path / "projections.json", *services)

    assert all(results[name] > 0 for name in METRICS if name != "log_cost")
    (run,) = results["runs"]
    assert run["read_model_correct"]
    assert run["errors"] == 0
    assert run["caught_up_events"] >= 4_000  # the stored events, and the RPC's with the log


def test_the_projections_section_is_replaced_and_the_rest_of_the_page_kept() -> None:
    before, after = "# Title\n\n## Before\n\nkept\n\n", "\n## After\n\nalso kept\n"
    page = f"{before}{SECTION}\n\nold\n{after}"
    new = f"{SECTION}\n\nnew\n"
    assert replaced_section(page, SECTION, new) == f"{before}{new}{after}"
    assert replaced_section("# Title\n", SECTION, new) == f"# Title\n\n{new}"


def test_the_commit_without_the_log_is_the_migration_s_function_less_its_log_step() -> None:
    folder = Path(__file__).parents[2] / "shared/pachyderm/store/migrations/postgres"
    (migration,) = folder.glob("0016_*.sql")
    definition = migration.read_text(encoding="utf-8")
    cut = without_log_step(definition)

    for table in ("log_heads", "event_log"):
        assert table in definition
        assert table not in cut
    for kept in ("-- 9. ", "INSERT INTO events", "INSERT INTO commands"):
        assert kept in cut
    with pytest.raises(ValueError, match="substring not found"):
        without_log_step(cut)
