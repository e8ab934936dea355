"""Baseline: the message path alone. Counters live in a dict; nothing is stored.

Run as ``python -m bench.baselines.raw_broker`` with the ``PACHYDERM_*`` variables a
worker gets (the benchmark starts it).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from ._amqp import BaselineSettings, Command, serve


class Counters:
    """Each counter's version and count, in memory."""

    def __init__(self) -> None:
        self._counters: dict[uuid.UUID, tuple[int, int]] = {}

    async def apply(self, command: Command) -> tuple[int, Any]:
        version, count = self._counters.get(command.entity_id, (0, 0))
        if not command.is_query:
            version, count = version + 1, count + int(command.data["amount"])
            self._counters[command.entity_id] = (version, count)
        return version, {"count": count}


def main() -> None:
    asyncio.run(serve(Counters().apply, BaselineSettings.from_environment()))


if __name__ == "__main__":
    main()
