"""The overload settings reach what they configure: the topology's queue arguments, the
client's in-flight limit, the worker's cap and its broker patience; and a wrong one is
refused by name."""

from __future__ import annotations

import argparse

import pytest

from pachyderm import PachydermError, Settings
from pachyderm._client import client_options, topology_of
from pachyderm.cli._arguments import settings_of
from pachyderm.cli._serve import worker_options
from pachyderm.transport import Topology


def test_the_queue_limit_is_part_of_the_topology() -> None:
    settings = Settings(namespace="shop", partitions=4, queue_max_length=100)
    assert topology_of(settings) == Topology("shop", 4, max_length=100, overflow="reject-publish")
    dropping = Settings(queue_max_length=5, queue_overflow="drop-head")
    assert topology_of(dropping).overflow == "drop-head"


def test_the_clients_limit_comes_from_the_settings_and_0_means_none() -> None:
    assert client_options(Settings(client_max_in_flight=7, client_wait=0.5)) == {
        "timeout": 10.0,
        "max_in_flight": 7,
        "wait": 0.5,
    }
    assert client_options(Settings(client_max_in_flight=0))["max_in_flight"] is None


def test_the_workers_cap_comes_from_the_settings() -> None:
    assert worker_options(Settings(max_in_flight=12)).max_in_flight == 12


def test_an_unknown_overflow_is_refused_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PACHYDERM_QUEUE_OVERFLOW", "reject-publish-dlx")
    with pytest.raises(PachydermError, match="PACHYDERM_QUEUE_OVERFLOW"):
        settings_of(argparse.Namespace())


def test_a_topology_refuses_a_limit_it_cannot_declare() -> None:
    with pytest.raises(ValueError, match="max_length"):
        Topology("shop", 4, max_length=-1)
    with pytest.raises(ValueError, match="overflow"):
        Topology("shop", 4, max_length=10, overflow="reject-publish-dlx")


def test_the_workers_broker_patience_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert worker_options(Settings()).broker_patience == 1.0
    monkeypatch.setenv("PACHYDERM_BROKER_PATIENCE", "7.5")
    assert worker_options(Settings()).broker_patience == 7.5
    monkeypatch.setenv("PACHYDERM_BROKER_PATIENCE", "0")
    with pytest.raises(ValueError, match="broker_patience"):
        Settings()
