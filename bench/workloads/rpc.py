"""Workloads 1 and 2: calls with 256 in flight, and calls one at a time.

Both go through ``Client.request`` (which returns the version as well as
the reply, for the correctness check), over one client connection, against
two worker processes on 16 partitions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pachyderm import Client, PachydermError

from ..app import COMMAND
from ..fleet import percentile
from .plan import Call

CALL_TIMEOUT = 60.0


@dataclass
class CallsResult:
    """How a batch of calls went: timings, replies by command id, failures."""

    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    replies: dict[str, tuple[int, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0

    def latency_ms(self, share: float) -> float:
        return percentile(self.latencies_s, share) * 1000 if self.latencies_s else 0.0


async def run_calls(client: Client, calls: list[Call], in_flight: int) -> CallsResult:
    """Make ``calls`` with at most ``in_flight`` waiting for their replies.

    The callers share one iterator, so calls start in plan order: an entity's
    calls are sent in its own order even when two of them are in flight.
    """
    result = CallsResult()
    pending: Iterator[Call] = iter(calls)

    async def caller() -> None:
        for call in pending:
            started = time.perf_counter()
            try:
                reply = await client.request(
                    call.ref, COMMAND, call.data, command_id=call.command_id, timeout=CALL_TIMEOUT
                )
            except PachydermError as error:
                result.errors.append(f"{call.ref.id} command {call.position}: {error!r}")
                continue
            result.latencies_s.append(time.perf_counter() - started)
            result.replies[call.command_id] = reply

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    result.elapsed_s = time.perf_counter() - started
    return result


def summary(result: CallsResult) -> dict[str, float]:
    return {
        "per_s": result.per_s,
        "p50_ms": result.latency_ms(0.5),
        "p99_ms": result.latency_ms(0.99),
        "calls": float(len(result.latencies_s)),
    }
