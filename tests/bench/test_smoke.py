"""The benchmark keeps working: ``python -m bench --quick`` end to end, on the real services.

Tiny sizes, one run, no files written in bench/; nothing here looks at how
fast anything was, only that every workload produced its numbers and that
every system answered every call exactly. The profile pass is left out: it
needs py-spy, which is not a dependency.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = {"pachyderm", "raw_broker", "naive_worker"}


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


def test_the_quick_benchmark_measures_every_workload(
    tmp_path: Path, postgres_dsn: str, rabbitmq_url: str
) -> None:
    output = tmp_path / "results.json"
    workloads = "rpc,sequential,drain,failover,cold_load,memory"
    command = [sys.executable, "-m", "bench", "--quick", "--only", workloads]
    command += ["--database-url", postgres_dsn, "--amqp-url", rabbitmq_url]
    finished = subprocess.run(
        [*command, "--json-out", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-4000:]
    results = json.loads(output.read_text())

    assert set(results["throughput_per_s"]) == SYSTEMS
    assert all(map(_positive, results["throughput_per_s"].values()))
    assert all(map(_positive, results["sequential_latency_ms"].values()))
    assert set(results["drain_per_s"]) == {*SYSTEMS, "pachyderm_1_worker"}
    assert all(map(_positive, results["drain_per_s"].values()))
    assert _positive(results["failover_s"])
    assert {"10", "1000", "100000", "100000_snapshot"} <= set(results["cold_load_ms"])
    assert all(map(_positive, results["cold_load_ms"].values()))
    assert _positive(results["rss_mib_100k_entities"])
    assert results["machine"]["disk_fsync"]["ops_per_s"] > 0
    assert {
        name: verdict["ok"] for name, verdict in results["correctness"].items()
    } == dict.fromkeys(SYSTEMS, True)
