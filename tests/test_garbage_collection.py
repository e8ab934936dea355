"""A worker's collector: the first threshold as set, what is alive at start frozen.

Run in a child interpreter: freezing is for the whole process, this one included."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pachyderm import Settings

PROBE = """
import gc, sys
from pachyderm._garbage_collection import tune_collector
before = gc.get_threshold()
tune_collector(int(sys.argv[1]))
print(gc.get_threshold()[0], before[1:] == gc.get_threshold()[1:], gc.get_freeze_count() > 0)
"""


@pytest.mark.parametrize(("threshold", "first"), [(12_345, 12_345), (0, 700)])
def test_the_first_threshold_is_set_and_the_living_frozen(threshold: int, first: int) -> None:
    found = subprocess.run(
        [sys.executable, "-c", PROBE, str(threshold)], capture_output=True, text=True, check=True
    )
    assert found.stdout.split() == [str(first), "True", "True"]


def test_workers_pass_fifty_thousand_by_default() -> None:
    assert Settings(app="x:APP").gc_threshold == 50_000
    assert Settings(app="x:APP", gc_threshold=0).gc_threshold == 0
