"""Where one sequential call's time goes: timestamps at each stage of its path.

    python -m bench.stages [--calls 1000] [--worker-variant NAME ...]

Deploys Pachyderm with one worker process started through this module (with
``BENCH_STAGES_WORKER`` set), which wraps the stages of the worker's hot path in
timestamps before running ``pachyderm worker bench.app:APP`` as usual, and makes
sequential calls from this process, whose client is wrapped the same way; then
the same calls against the raw broker baseline, and one-change commits alone.
Every timestamp is ``time.perf_counter`` (CLOCK_MONOTONIC, the same clock in
every process on the machine), so the stages of the two processes line up:

- client: the call starts, its publish is written, confirmed, the reply arrives;
- worker: the delivery arrives, the batch is taken, the commit starts and ends,
  the replies are written, the ack is written.

Stage durations are medians over the calls (a median of differences, so the
rows need not add up exactly to the total). The wrapping costs a few
microseconds per stage, the same in every variant.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pachyderm
from pachyderm import Client, Ref

from .app import COMMAND, ENTITY_TYPE
from .config import Services
from .cpu import cpu_seconds
from .systems import RAW_BROKER, SYSTEMS, Baseline, Pachyderm, System, deployed
from .workloads.commit_latency import commit_latency

_OUT = "BENCH_STAGES_OUT"
_WORKER = "BENCH_STAGES_WORKER"  # set: this process is the timed worker
_EVENTS: list[tuple[str, str, float]] = []  # (key, stage, time)
_CPU: dict[str, float] = {}  # the worker's CPU-ms per call, by system


def _note(key: str, stage: str) -> None:
    _EVENTS.append((key, stage, time.perf_counter()))


def _timed(
    owner: Any, name: str, key_of: Callable[..., str], before: str, after: str | None
) -> None:
    """Wrap ``owner.name`` (a coroutine function) with timestamps before and after."""
    original = getattr(owner, name)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = key_of(*args, **kwargs)
        _note(key, before)
        result = await original(*args, **kwargs)
        if after is not None:
            _note(key, after)
        return result

    setattr(owner, name, wrapper)


def _first_message(messages: Sequence[Any]) -> str:
    return str(messages[0].correlation_id) if messages else ""


def instrument_worker() -> None:
    """Timestamps around the worker's stages (keys: the command's correlation id)."""
    from pachyderm.store import PostgresEventStore  # noqa: PLC0415
    from pachyderm.transport import _amqp, _rabbitmq, _rabbitmq_inbox  # noqa: PLC0415
    from pachyderm.worker import _partition  # noqa: PLC0415

    original_delivery = _rabbitmq_inbox.RabbitMQInbox._on_delivery

    async def on_delivery(self: Any, incoming: Any) -> None:
        _note(str(incoming.header.properties.correlation_id), "w_delivered")
        await original_delivery(self, incoming)

    _rabbitmq_inbox.RabbitMQInbox._on_delivery = on_delivery  # type: ignore[method-assign]
    # The batch's first delivery names the batch (one at a time: the only one).
    first_delivery: Callable[..., str] = lambda _self, deliveries: (  # noqa: E731
        str(deliveries[0].message.correlation_id) if deliveries else ""
    )
    _timed(_partition.PartitionWorker, "handle", first_delivery, "w_taken", "w_done")
    last = {"key": ""}

    def current(*_args: Any, **_kwargs: Any) -> str:
        return last["key"]

    original_handle = _partition.PartitionWorker.handle

    async def handle(self: Any, deliveries: Sequence[Any]) -> None:
        last["key"] = first_delivery(self, deliveries)
        await original_handle(self, deliveries)

    _partition.PartitionWorker.handle = handle  # type: ignore[method-assign]
    _timed(PostgresEventStore, "commit", current, "w_commit", "w_committed")
    _timed(
        _rabbitmq.RabbitMQTransport,
        "publish_replies",
        lambda _self, messages: _first_message(messages),
        "w_reply",
        "w_replied",
    )
    _timed(_rabbitmq_inbox.RabbitMQInbox, "ack", current, "w_ack", "w_acked")
    del _amqp
    _switch_off()


def _no_wakeup(_notifier: object, _partitions: object) -> None:
    return None


def _never(_channel: object) -> bool:
    return False


async def _never_one_change(_store: object, _change: object) -> None:
    return None


def _switch_off() -> None:
    """Capabilities a variant switches off (``BENCH_STAGES_OFF=notify,telemetry``), to
    measure what each costs on this path."""
    from pachyderm.store import _postgres, _postgres_wakeups  # noqa: PLC0415
    from pachyderm.transport import _channel_writes, _publish_batches  # noqa: PLC0415
    from pachyderm.worker import WorkerHooks, _worker  # noqa: PLC0415

    off = set(filter(None, os.environ.get("BENCH_STAGES_OFF", "").split(",")))
    if "notify" in off:  # the log's wake-ups (LISTEN/NOTIFY)
        vars(_postgres_wakeups)["LogNotifier"].committed = _no_wakeup
    if "telemetry" in off:  # metrics and traces: the hooks that do nothing
        vars(_worker)["TelemetryHooks"] = WorkerHooks
    if "one_change" in off:  # every commit through the fenced function (migration 0017)
        vars(_postgres)["PostgresEventStore"]._commit_one = _never_one_change
    if "writes_at_once" in off:  # every frame written as a channel task, as in session 18
        for module in (_channel_writes, _publish_batches):
            vars(module)["can_write_now"] = _never


def instrument_client() -> None:
    """Timestamps around the client's stages (keys: correlation ids)."""
    from pachyderm import _client  # noqa: PLC0415
    from pachyderm.transport import _rabbitmq  # noqa: PLC0415

    _timed(
        _rabbitmq.RabbitMQTransport,
        "publish_command",
        lambda _self, message: str(message.correlation_id),
        "c_publish",
        "c_confirmed",
    )
    original_reply = _client.Client._on_reply

    async def on_reply(self: Any, message: Any) -> None:
        _note(str(message.correlation_id), "c_reply")
        await original_reply(self, message)

    _client.Client._on_reply = on_reply  # type: ignore[method-assign]


def _dump() -> None:
    path = os.environ.get(_OUT)
    if path:
        Path(path).write_text(json.dumps(_EVENTS))


def _worker_main(argv: Sequence[str]) -> int:
    """``pachyderm worker`` with the worker's stages timed; written out at exit."""
    from pachyderm.cli import main  # noqa: PLC0415

    instrument_worker()
    atexit.register(_dump)
    return main(["worker", *argv])


# Stages (from, to) as rows of the breakdown, in path order.
ROWS: list[tuple[str, str, str]] = [
    ("client: publish written -> worker: delivery arrives", "c_publish", "w_delivered"),
    ("worker: delivery arrives -> batch taken", "w_delivered", "w_taken"),
    ("worker: batch taken -> commit starts (parse, load, decide)", "w_taken", "w_commit"),
    ("worker: the commit (store.commit)", "w_commit", "w_committed"),
    ("worker: commit ends -> replies written", "w_committed", "w_replied"),
    ("worker: replies written -> ack written", "w_replied", "w_acked"),
    ("worker: reply written -> client: reply arrives", "w_replied", "c_reply"),
    ("client: reply arrives -> call returns", "c_reply", "c_returned"),
    ("client: publish -> its confirm", "c_publish", "c_confirmed"),
    ("whole call (client)", "c_start", "c_returned"),
]


def breakdown(events: Sequence[tuple[str, str, float]]) -> list[tuple[str, float, int]]:
    """Median milliseconds of each row over the calls that have both stages."""
    by_key: dict[str, dict[str, float]] = {}
    for key, stage, at in events:
        by_key.setdefault(key, {}).setdefault(stage, at)
    rows = []
    for label, start, end in ROWS:
        spans = [
            (stages[end] - stages[start]) * 1000
            for stages in by_key.values()
            if start in stages and end in stages
        ]
        rows.append((label, statistics.median(spans) if spans else float("nan"), len(spans)))
    return rows


async def _sequential(client: Client, calls: int, *, record: bool) -> list[float]:
    ref = Ref(ENTITY_TYPE, uuid.uuid4())
    latencies = []
    for _ in range(calls):
        # The client's correlation id is made inside the call: note start and end
        # under a key the reply's stages will carry (the last one published).
        started = time.perf_counter()
        await client.request(ref, COMMAND, {"amount": 1})
        ended = time.perf_counter()
        latencies.append(ended - started)
        if record and _EVENTS:
            key = _EVENTS[-1][0]
            _EVENTS.append((key, "c_start", started))
            _EVENTS.append((key, "c_returned", ended))
    return latencies


def _percentile(samples: Sequence[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


async def _system_calls(
    system: System, folder: Path, calls: int, environment: dict[str, str], *, record: bool
) -> list[float]:
    services = Services.from_environment()
    os.environ.update(environment)
    async with deployed(system, services, folder) as deployment:
        deployment.start_workers(["w1"])
        await deployment.fleet.balanced()
        async with deployment.client() as client:
            await _sequential(client, max(50, calls // 10), record=False)
            _EVENTS.clear()
            worker = deployment.worker_pids()[0]
            before = cpu_seconds(worker)
            latencies = await _sequential(client, calls, record=record)
            _CPU[system.name] = (cpu_seconds(worker) - before) * 1000 / calls
            return latencies


async def measure(calls: int, variants: Sequence[str]) -> dict[str, Any]:
    class Staged(Baseline):
        """Pachyderm's worker, started through this module (as a baseline is)."""

        async def committed(self, deployment: Any) -> int:
            return await Pachyderm().committed(deployment)

        def history_schema(self, namespace: str) -> str | None:
            return namespace

    instrument_client()
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pachyderm-stages-") as scratch:
        folder = Path(scratch)
        raw = await _system_calls(SYSTEMS[RAW_BROKER], folder, calls, {}, record=False)
        found["raw_broker"] = {
            "p50_ms": _percentile(raw, 0.5),
            "p99_ms": _percentile(raw, 0.99),
            "worker_cpu_ms": _CPU[RAW_BROKER],
        }
        for variant in variants:
            out = folder / f"stages-{variant}.json"
            environment = {_OUT: str(out), _WORKER: "1", "PACHYDERM_HEALTH_PORT": "0"}
            for setting in filter(None, variant.split("+")):
                if setting != "default":
                    name, _, value = setting.partition("=")
                    environment[name] = value
            staged = Staged("pachyderm", "bench.stages")
            ours = await _system_calls(staged, folder, calls, environment, record=True)
            for name in environment:
                os.environ.pop(name, None)
            worker_events = json.loads(out.read_text()) if out.exists() else []
            rows = breakdown([*map(tuple, worker_events), *_EVENTS])
            found[variant] = {
                "p50_ms": _percentile(ours, 0.5),
                "p99_ms": _percentile(ours, 0.99),
                "stages": rows,
                "worker_cpu_ms": _CPU["pachyderm"],
            }
            _EVENTS.clear()
        found["commit_alone"] = (await commit_latency(Services.from_environment().dsn, 300))[
            "store"
        ]
    return found


def _report(found: dict[str, Any]) -> None:
    raw = found["raw_broker"]
    print(
        f"raw_broker sequential: p50 {raw['p50_ms']:.3f} ms, p99 {raw['p99_ms']:.3f} ms,"
        f" worker CPU {raw['worker_cpu_ms']:.3f} ms per call"
    )
    commit = found["commit_alone"]
    print(f"one commit alone: p50 {commit['p50_ms']:.3f} ms, p99 {commit['p99_ms']:.3f} ms")
    for variant, result in found.items():
        if "stages" not in result:
            continue
        ratio = result["p50_ms"] / raw["p50_ms"]
        print(
            f"\n{variant}: p50 {result['p50_ms']:.3f} ms ({ratio:.2f}x raw),"
            f" p99 {result['p99_ms']:.3f} ms ({result['p99_ms'] / raw['p99_ms']:.2f}x raw),"
            f" worker CPU {result['worker_cpu_ms']:.3f} ms per call"
        )
        for label, median, count in result["stages"]:
            print(f"  {label:<62} {median:7.3f} ms  ({count} calls)")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get(_WORKER):
        return _worker_main(arguments or ["bench.app:APP"])
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument(
        "--variant",
        action="append",
        help="worker settings as NAME=VALUE+NAME=VALUE (PACHYDERM_* variables); 'default'",
    )
    parser.add_argument("--json-out", type=Path)
    options = parser.parse_args(arguments)
    found = pachyderm.run(measure(options.calls, options.variant or ["default"]))
    _report(found)
    if options.json_out:
        options.json_out.write_text(json.dumps(found, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
