"""``pachyderm inspect`` shows an entity's pending timers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from examples import reservation
from pachyderm._embedded import embedded
from pachyderm.cli import main


def seed(database: str) -> None:
    async def run() -> None:
        async with embedded(reservation.app, database) as fleet:
            seat = reservation.Seat.ref("2C")
            await fleet.client.call(seat, reservation.Hold("cy", seconds=3600))
            sub = reservation.Subscription.ref("s")
            await fleet.client.call(sub, reservation.Subscribe(every_seconds=86400))

    asyncio.run(run())


def test_inspect_lists_pending_timers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = f"sqlite:///{tmp_path / 'timers.db'}"
    seed(database)
    base = ["--database-url", database, "inspect", "--key", "--app", "examples.reservation"]
    assert main([*base, "seat", "2C"]) == 0
    out = capsys.readouterr().out
    assert "timers:" in out
    assert 'hold: Lapse {"customer": "cy"} due ' in out
    assert main([*base, "subscription", "s", "--json"]) == 0
    [timer] = json.loads(capsys.readouterr().out)["timers"]
    assert (timer["key"], timer["command"], timer["every_seconds"], timer["missed"]) == (
        "renew",
        "Renew",
        86400.0,
        "once",
    )
    assert main([*base, "seat", "9Z"]) == 0
    assert "timers: none pending" in capsys.readouterr().out
