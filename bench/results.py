"""What the runs measured, gathered across runs: medians with min and max, and the targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from .fleet import summary as spread
from .profiling import Profile
from .systems import NAIVE_WORKER, PACHYDERM, RAW_BROKER
from .workloads.drain import DrainResult
from .workloads.memory import MemoryResult

PACHYDERM_1_WORKER = "pachyderm_1_worker"
Spread = dict[str, float]


@dataclass
class ProfiledRun:
    profiles: dict[str, Profile]
    elapsed_s: float
    cpu_per_1000: dict[str, float]


@dataclass
class Collected:
    """Every sample of every run, by workload and system."""

    runs: int = 0
    rpc: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    sequential: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    commit_latency: list[dict[str, dict[str, float]]] = field(default_factory=list)
    cpu: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    correctness: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    drain: dict[str, list[DrainResult]] = field(default_factory=dict)
    failover_s: list[float] = field(default_factory=list)
    cold_load_ms: list[dict[str, float]] = field(default_factory=list)
    memory: list[MemoryResult] = field(default_factory=list)
    cache_bytes_per_entity: float | None = None
    profiles: dict[str, ProfiledRun] = field(default_factory=dict)

    def add(self, table: dict[str, list[Any]], key: str, sample: Any) -> None:
        table.setdefault(key, []).append(sample)


def _median_of(samples: list[dict[str, float]], key: str) -> Spread:
    return spread([sample[key] for sample in samples])


def _ratios(numerators: list[float], denominators: list[float]) -> Spread | None:
    """Ratios within each run (the runs share the machine's mood), then their spread."""
    pairs = [(a, b) for a, b in zip(numerators, denominators, strict=False) if b]
    return spread([a / b for a, b in pairs]) if pairs else None


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    wanted: str
    met: bool | None  # None: not measured in this run
    unit: str = ""


def _target(
    name: str, value: float | None, bound: float, *, at_least: bool, unit: str = ""
) -> Target:
    sign = ">=" if at_least else "<="
    wanted = f"{sign} {bound:g}{unit}"
    if value is None:
        return Target(name, None, wanted, None, unit)
    return Target(name, value, wanted, value >= bound if at_least else value <= bound, unit)


class Results:
    """Summaries of :class:`Collected`, as results.json has them."""

    def __init__(self, collected: Collected, machine: dict[str, Any], command: str) -> None:
        self.collected = collected
        self.machine = machine
        self.command = command

    # -- summaries ---------------------------------------------------------------

    def throughput(self) -> dict[str, Spread]:
        return {name: _median_of(runs, "per_s") for name, runs in self.collected.rpc.items()}

    def latency(self) -> dict[str, dict[str, Spread]]:
        found: dict[str, dict[str, Spread]] = {}
        for name, runs in self.collected.rpc.items():
            found.setdefault(name, {})["rpc_p50"] = _median_of(runs, "p50_ms")
            found[name]["rpc_p99"] = _median_of(runs, "p99_ms")
        for name, runs in self.collected.sequential.items():
            found.setdefault(name, {})["sequential_p50"] = _median_of(runs, "p50_ms")
            found[name]["sequential_p99"] = _median_of(runs, "p99_ms")
        return found

    def commit_latency(self) -> dict[str, dict[str, Spread]]:
        """p50 and p99 of a one-change commit, by how the store's pool was set up."""
        runs = self.collected.commit_latency
        return {
            setup: {
                key: _median_of([run[setup] for run in runs], key) for key in ("p50_ms", "p99_ms")
            }
            for setup in (runs[0] if runs else {})
        }

    def drain(self) -> dict[str, Spread]:
        return {
            name: spread([result.per_s for result in runs])
            for name, runs in self.collected.drain.items()
        }

    def drain_steady(self) -> dict[str, Spread]:
        return {
            name: spread([result.steady_per_s for result in runs])
            for name, runs in self.collected.drain.items()
        }

    def drain_balanced_after(self) -> dict[str, list[float | None]]:
        return {
            name: [result.balanced_after_s for result in runs]
            for name, runs in self.collected.drain.items()
        }

    def cold_load(self) -> dict[str, Spread]:
        labels = self.collected.cold_load_ms[0] if self.collected.cold_load_ms else {}
        return {
            label: spread([run[label] for run in self.collected.cold_load_ms]) for label in labels
        }

    def memory(self) -> dict[str, Spread]:
        runs = self.collected.memory
        if not runs:
            return {}
        return {
            "idle_rss_mib": spread([r.idle_rss_mib for r in runs]),
            "loaded_rss_mib": spread([r.loaded_rss_mib for r in runs]),
            "bytes_per_entity": spread([r.bytes_per_entity for r in runs]),
        }

    def cpu(self) -> dict[str, dict[str, float]]:
        """Median CPU seconds per 1,000 commands (= CPU-ms per command) by component,
        in the RPC workload."""
        return {name: _medians(runs) for name, runs in self.collected.cpu.items() if runs}

    def drain_cpu(self) -> dict[str, dict[str, float]]:
        """The same in the drain."""
        return {
            name: _medians([result.cpu_per_1000 for result in runs])
            for name, runs in self.collected.drain.items()
            if runs
        }

    def correct(self) -> dict[str, bool]:
        return {
            name: all(run["ok"] for run in runs)
            for name, runs in self.collected.correctness.items()
        }

    def _rpc_ratio(self, other: str) -> Spread | None:
        rpc = self.collected.rpc
        if PACHYDERM not in rpc or other not in rpc:
            return None
        return _ratios([r["per_s"] for r in rpc[PACHYDERM]], [r["per_s"] for r in rpc[other]])

    def _drain_ratio(self, other: str) -> Spread | None:
        drain = self.collected.drain
        if PACHYDERM not in drain or other not in drain:
            return None
        return _ratios([r.per_s for r in drain[PACHYDERM]], [r.per_s for r in drain[other]])

    def ratios(self) -> dict[str, Spread]:
        found = {
            "rpc_vs_raw_broker": self._rpc_ratio(RAW_BROKER),
            "rpc_vs_naive_worker": self._rpc_ratio(NAIVE_WORKER),
            "drain_vs_raw_broker": self._drain_ratio(RAW_BROKER),
            "drain_vs_naive_worker": self._drain_ratio(NAIVE_WORKER),
        }
        return {name: ratio for name, ratio in found.items() if ratio is not None}

    def targets(self) -> list[Target]:
        def median(table: dict[str, Spread], key: str) -> float | None:
            return table[key]["median"] if key in table else None

        ratios = self.ratios()
        latency = self.latency().get(PACHYDERM, {})
        failover = spread(self.collected.failover_s) if self.collected.failover_s else None
        wanted = [
            # name, measured median, bound, at least (else at most), unit
            ("RPC throughput vs raw_broker", median(ratios, "rpc_vs_raw_broker"), 1.0, True, "x"),
            (
                "RPC throughput vs naive_worker",
                median(ratios, "rpc_vs_naive_worker"),
                1.6,
                True,
                "x",
            ),
            ("sequential p50", median(latency, "sequential_p50"), 2.0, False, " ms"),
            ("sequential p99", median(latency, "sequential_p99"), 4.0, False, " ms"),
            ("drain, 2 workers", median(self.drain(), PACHYDERM), 5000, True, "/s"),
            ("drain vs raw_broker", median(ratios, "drain_vs_raw_broker"), 0.7, True, "x"),
            ("drain vs naive_worker", median(ratios, "drain_vs_naive_worker"), 5.0, True, "x"),
            ("failover after SIGKILL", failover["median"] if failover else None, 2.0, False, " s"),
            (
                "cold load, 100,000 events with snapshots",
                median(self.cold_load(), "100000_snapshot"),
                10.0,
                False,
                " ms",
            ),
            (
                "memory per cached counter (aim)",
                median(self.memory(), "bytes_per_entity"),
                1024,
                False,
                " B",
            ),
        ]
        return [
            _target(name, value, bound, at_least=at_least, unit=unit)
            for name, value, bound, at_least, unit in wanted
        ]

    # -- results.json ------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        def medians(table: dict[str, Spread]) -> dict[str, float]:
            return {key: value["median"] for key, value in table.items()}

        latency = self.latency().get(PACHYDERM, {})
        memory = self.memory()
        failover = spread(self.collected.failover_s) if self.collected.failover_s else None
        return {
            "throughput_per_s": medians(self.throughput()),
            "sequential_latency_ms": {
                "p50": latency["sequential_p50"]["median"] if "sequential_p50" in latency else None,
                "p99": latency["sequential_p99"]["median"] if "sequential_p99" in latency else None,
            },
            "drain_per_s": medians(self.drain()),
            "failover_s": failover["median"] if failover else None,
            "cold_load_ms": medians(self.cold_load()),
            "rss_mib_100k_entities": memory["loaded_rss_mib"]["median"] if memory else None,
            "machine": self.machine,
            "runs": self.collected.runs,
            "command": self.command,
            "spread": {
                "throughput_per_s": self.throughput(),
                "drain_per_s": self.drain(),
                "drain_per_s_steady_10_to_90_percent": self.drain_steady(),
                "drain_partitions_balanced_after_s": self.drain_balanced_after(),
                "failover_s": failover,
                "failover_trials_s": self.collected.failover_s,
                "cold_load_ms": self.cold_load(),
                "memory": memory,
                "ratios": self.ratios(),
            },
            "latency_ms": self.latency(),
            "store_commit_latency_ms": self.commit_latency(),
            "cache_structures_bytes_per_entity": self.collected.cache_bytes_per_entity,
            "cpu_s_per_1000_commands": self.cpu(),
            "drain_cpu_s_per_1000_commands": self.drain_cpu(),
            "correctness": {
                name: {"ok": ok, "runs": self.collected.correctness[name]}
                for name, ok in self.correct().items()
            },
            "targets": [
                {"name": t.name, "value": t.value, "target": t.wanted, "met": t.met}
                for t in self.targets()
            ],
            "profile": {
                name: {
                    "cpu_s_per_1000_commands": run.cpu_per_1000,
                    **{
                        part: {
                            "samples": profile.samples,
                            "components": dict(profile.share(profile.components, 20)),
                            "top_self": dict(profile.share(profile.self_time, 25)),
                        }
                        for part, profile in run.profiles.items()
                    },
                }
                for name, run in self.collected.profiles.items()
            },
        }
