"""The membership simulation benchmark keeps working: ``python -m bench.membership --quick``.

Ten workers, nothing written in bench/; that every change came out for both
versions of the membership, and that its figures go under ``scale`` ->
``simulation`` of the results without touching the keys beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.membership import KEY, SECTION
from bench.standalone import write

from .quick import run_quick


def test_the_quick_simulation_measures_every_change_before_and_after(tmp_path: Path) -> None:
    results = run_quick("bench.membership", tmp_path / "membership.json")
    runs = results["sizes"]["10"]
    assert [phase["name"] for phase in runs["before"]] == [p["name"] for p in runs["after"]]
    assert len(runs["after"]) == 8
    for phase in runs["before"] + runs["after"]:
        assert phase["late_moves"] == 0
        assert phase["moves"] >= phase["needed"]
    assert results["second_worker"]["before"]["moves"] == 1024 + 512
    assert results["second_worker"]["after"]["moves"] == 1024
    assert results["assignment_ms"]["10"]["cold"] > 0


def test_the_simulation_is_written_under_scale_beside_the_other_keys(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(
        json.dumps({"timers": {"kept": 1}, "scale": {"cluster": {"kept": 2}, "simulation": 0}})
    )
    (tmp_path / "results.md").write_text("# Results\n\n## Timers\n\nkept\n")
    write(KEY, SECTION, {"new": 3}, f"{SECTION}\n\nfigures\n", directory=tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == {
        "timers": {"kept": 1},
        "scale": {"cluster": {"kept": 2}, "simulation": {"new": 3}},
    }
    page = (tmp_path / "results.md").read_text()
    assert page == f"# Results\n\n## Timers\n\nkept\n\n{SECTION}\n\nfigures\n"
    write(KEY, SECTION, {"new": 4}, f"{SECTION}\n\nagain\n", directory=tmp_path)
    assert (tmp_path / "results.md").read_text().count(SECTION) == 1
    assert json.loads((tmp_path / "results.json").read_text())["scale"]["simulation"] == {"new": 4}
