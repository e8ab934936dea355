"""The long run's figures read from its workers' logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.long_run import long_child_waits, refused_settlements

pytestmark = pytest.mark.chaos

REFUSED = "TransportError: acknowledging deliveries: RabbitMQ refused (PRECONDITION_FAILED -"


def test_a_refused_settlement_counts_once_per_worker_whatever_waited_on_it(
    tmp_path: Path,
) -> None:
    # Every settlement waiting on the channel fails with the one refusal.
    (tmp_path / "w1.log").write_text(f"{REFUSED} unknown delivery tag 156)\n" * 2)
    (tmp_path / "w2.log").write_text(
        f"{REFUSED} unknown delivery tag 156)\n{REFUSED} unknown delivery tag 9)\n"
    )
    (tmp_path / "w3.log").write_text("INFO pachyderm.worker: serving partitions [1]\n")
    (tmp_path / "w3.control").write_text(f"{REFUSED} unknown delivery tag 1)\n")
    assert refused_settlements(tmp_path) == 3


def test_long_waits_for_a_child_s_slot_are_counted_from_the_warnings(tmp_path: Path) -> None:
    wait = "2026-12-07 15:39:27,155 {} pachyderm.quarantine: partition 3: a suspect batch waited"
    (tmp_path / "w1.log").write_text(f"{wait.format('WARNING')} 1.041 s for a child's slot\n" * 2)
    (tmp_path / "w2.log").write_text(f"{wait.format('DEBUG')} 0.041 s for a child's slot\n")
    assert long_child_waits(tmp_path) == 2
