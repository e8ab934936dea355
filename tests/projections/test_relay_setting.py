"""``PACHYDERM_EVENT_RELAY=true``: ``pachyderm projections`` runs the event relay for an
app that registers none, and no second one for an app that has its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pachyderm import EventRelay, load_settings
from pachyderm.cli._projections import with_relay

from ..python_process import ROOT
from . import tally, test_relay
from .conftest import Backend
from .test_relay import (
    Subscriber,
    assert_is_relayed,
    eventually_or_show,
    stored,
    versions_by_entity,
)
from .test_runners import PARTITIONS, write_tallies

# A queue bound to <ns>.events with "#" (test_relay's fixture).
subscriber = test_relay.subscriber


class OwnRelay(EventRelay):
    """An app's own relay, under a name of its own."""

    name = "own_relay"


# For the command line (tests.projections.test_relay_setting:NO_PROJECTIONS, :OWN_RELAY).
NO_PROJECTIONS = tally.app()
OWN_RELAY = tally.app(OwnRelay())


def test_the_setting_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PACHYDERM_EVENT_RELAY", raising=False)
    assert not load_settings().event_relay
    assert with_relay(NO_PROJECTIONS, load_settings()) is NO_PROJECTIONS
    monkeypatch.setenv("PACHYDERM_EVENT_RELAY", "true")
    monkeypatch.setenv("PACHYDERM_NAMESPACE", "elsewhere")
    settings = load_settings()
    assert settings.event_relay
    [relay] = with_relay(NO_PROJECTIONS, settings).projections
    assert isinstance(relay, EventRelay)
    assert relay.name == "event_relay"
    assert with_relay(OWN_RELAY, settings) is OWN_RELAY
    monkeypatch.setenv("PACHYDERM_EVENT_RELAY", "maybe")
    with pytest.raises(ValueError, match="event_relay"):
        load_settings()


@contextlib.contextmanager
def projections_process(
    app: str, dsn: str, amqp_url: str, namespace: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``pachyderm projections APP`` with ``PACHYDERM_EVENT_RELAY=true``, configured as a
    deployment is; its standard error goes to ``log``."""
    env = {
        **os.environ,
        "PACHYDERM_DATABASE_URL": dsn,
        "PACHYDERM_AMQP_URL": amqp_url,
        "PACHYDERM_NAMESPACE": namespace,
        "PACHYDERM_PARTITIONS": str(PARTITIONS),
        "PACHYDERM_HEALTH_PORT": "0",
        "PACHYDERM_EVENT_RELAY": "true",
    }
    command = [sys.executable, "-m", "pachyderm", "projections", f"{__name__}:{app}"]
    with (
        log.open("ab") as stderr,
        subprocess.Popen(command, cwd=ROOT, env=env, stderr=stderr) as process,
    ):
        try:
            yield process
        finally:
            process.kill()


async def relay_through_the_command(
    app: str, postgres: Backend, subscriber: Subscriber, *, dsn: str, namespace: str, printed: Path
) -> None:
    """Run ``app`` until its relay published the whole log; check each event came once."""
    await write_tallies(postgres, tally.app(), entities=6, each=9)
    log = {str(logged.event_id): logged for logged in await stored(postgres)}
    assert len(log) == 54
    with projections_process(app, dsn, subscriber.url, namespace, printed) as process:

        async def all_received() -> bool:
            return len(subscriber.received) >= len(log)

        await eventually_or_show(all_received, printed)
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    # One relay: a clean run publishes each event once (two would publish it twice).
    assert sorted(m.message_id for m in subscriber.received) == sorted(log)
    for message in subscriber.received:
        assert_is_relayed(message, log[message.message_id])
    for versions in versions_by_entity(subscriber.received).values():
        assert versions == list(range(1, 10))


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_the_setting_runs_a_relay_for_an_app_without_projections(
    postgres: Backend, subscriber: Subscriber, postgres_dsn: str, namespace: str, tmp_path: Path
) -> None:
    printed = tmp_path / "projections.log"
    await relay_through_the_command(
        "NO_PROJECTIONS",
        postgres,
        subscriber,
        dsn=postgres_dsn,
        namespace=namespace,
        printed=printed,
    )
    cursors = await postgres.cursors.cursors()
    assert {c.projection for c in cursors} == {"event_relay"}
    assert sum(c.position for c in cursors) == 54


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_an_apps_own_relay_is_the_only_one_that_runs(
    postgres: Backend, subscriber: Subscriber, postgres_dsn: str, namespace: str, tmp_path: Path
) -> None:
    printed = tmp_path / "projections.log"
    await relay_through_the_command(
        "OWN_RELAY", postgres, subscriber, dsn=postgres_dsn, namespace=namespace, printed=printed
    )
    cursors = await postgres.cursors.cursors()
    assert {c.projection for c in cursors} == {"own_relay"}
