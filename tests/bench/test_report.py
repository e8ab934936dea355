"""The main benchmark's page and data keep what the benchmarks run on their own wrote."""

from __future__ import annotations

from bench import report


def test_the_main_page_keeps_the_sections_of_benchmarks_run_on_their_own() -> None:
    existing = (
        "# Old title\n\n## Targets\n\nold targets\n\n## Timers\n\ntimer figures\n\n"
        "## Profile of the hot path\n\nold profile\n\n## Projections\n\nlag figures\n"
    )
    written = "# Title\n\n## Targets\n\nnew targets\n"
    assert report.kept_sections(existing, written) == (
        "\n## Timers\n\ntimer figures\n\n## Projections\n\nlag figures\n"
    )


def test_a_page_with_no_sections_of_its_own_keeps_nothing() -> None:
    assert report.kept_sections("", "# Title\n") == ""
    assert report.kept_sections("# Title\n\n## Machine\n\nold\n", "# Title\n") == ""
