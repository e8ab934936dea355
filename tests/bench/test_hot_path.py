"""The hot-path benchmarks keep working: the in-process CPU measure of each variant,
and the stage breakdown of a sequential call from its timestamps."""

from __future__ import annotations

import pachyderm
from bench.hot_path import VARIANTS, measure
from bench.stages import ROWS, breakdown


def test_every_variant_of_the_worker_path_is_measured() -> None:
    found = pachyderm.run(measure(commands=32, repeats=1, batch=4))

    assert set(found) == set(VARIANTS)
    for to_reply, whole in found.values():
        assert 0 < to_reply <= whole


def test_a_stage_is_the_median_over_the_calls_that_passed_both_its_ends() -> None:
    events = [
        ("a", "w_delivered", 1.000),
        ("a", "w_taken", 1.001),
        ("b", "w_delivered", 2.000),
        ("b", "w_taken", 2.003),
        ("c", "w_delivered", 3.000),
        ("c", "w_taken", 3.002),
        ("d", "w_delivered", 4.000),  # never taken: not counted
    ]

    rows = {label: (median, count) for label, median, count in breakdown(events)}

    taken = next(label for label, start, end in ROWS if (start, end) == ("w_delivered", "w_taken"))
    median, count = rows[taken]
    assert count == 3
    assert round(median, 6) == 2.0  # ms
    assert all(count == 0 for label, (_, count) in rows.items() if label != taken)
