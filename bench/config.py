"""Sizes of the workloads (the issue's, or tiny ones for the smoke test) and services."""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

from pachyderm.testing import ProcessFleet, process_fleet

HERE = Path(__file__).parent
ROOT = HERE.parent

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"

PARTITIONS = 16
WORKERS = ("w1", "w2")
SEED = 20240611


@dataclass(frozen=True)
class Services:
    """The real PostgreSQL and RabbitMQ every workload runs against."""

    dsn: str
    amqp_url: str

    @classmethod
    def from_environment(cls, dsn: str | None = None, amqp_url: str | None = None) -> Services:
        return cls(
            dsn or os.environ.get("PACHYDERM_BENCH_DATABASE_URL", DEFAULT_DSN),
            amqp_url or os.environ.get("PACHYDERM_BENCH_AMQP_URL", DEFAULT_AMQP),
        )

    def fleet(
        self, folder: Path, namespace: str, app: str
    ) -> AbstractAsyncContextManager[ProcessFleet]:
        """Worker processes serving ``app`` (a spec) on the benchmark's partitions, in
        ``namespace`` (migrated by it), started as a workload asks."""
        return process_fleet(
            folder, namespace, self.dsn, self.amqp_url, app=app, partitions=PARTITIONS, cwd=ROOT
        )


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does; the defaults are the issue's."""

    rpc_entities: int = 1_000
    rpc_increments: int = 20
    in_flight: int = 256
    sequential: int = 2_000
    commit_latency_commits: int = 1_000
    drain_commands: int = 100_000
    drain_entities: int = 10_000
    failover_trials: int = 5
    failover_probes: int = 256
    failover_load_in_flight: int = 64
    # label -> events in the history; the labels are the results' keys.
    cold_load_events: dict[str, int] = field(
        default_factory=lambda: {"10": 10, "1000": 1_000, "100000": 100_000}
    )
    cold_load_repeats: int = 15
    cold_load_repeats_unsnapshotted_big: int = 3
    memory_entities: int = 100_000
    memory_warmup_commands: int = 20_000
    warmup_calls: int = 500


QUICK = Sizes(
    rpc_entities=20,
    rpc_increments=5,
    in_flight=32,
    sequential=20,
    commit_latency_commits=20,
    drain_commands=400,
    drain_entities=40,
    failover_trials=1,
    failover_probes=32,
    failover_load_in_flight=8,
    cold_load_events={"10": 10, "1000": 200, "100000": 1_000},
    cold_load_repeats=3,
    cold_load_repeats_unsnapshotted_big=1,
    memory_entities=300,
    memory_warmup_commands=200,
    warmup_calls=20,
)
