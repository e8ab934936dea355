"""The ``pachyderm`` command.

Each subcommand's module is imported only when that subcommand runs: the
broker, database, HTTP and telemetry libraries it needs load with it, so
``pachyderm --help`` (and any usage mistake) answers at once. Exit statuses:
0 done, 1 an error (one line on stderr), 2 a usage mistake (argparse's), 3 a
rejected call, 4 a replay check that found problems.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import PachydermError
from .._lazy import lazy_names
from .._running import run
from .._settings import Settings
from ._arguments import NEEDS_APP, parser, settings_of, subparser

if TYPE_CHECKING:
    from ._serve import serve
else:
    # serve: the worker of `pachyderm worker`, for harnesses that wrap its ports.
    __getattr__ = lazy_names(__name__, {"serve": "._serve"})

__all__ = ["main", "serve"]

Subcommand = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int | None]]
# The module defining each subcommand's ``<name>_command(settings, arguments)``.
_MODULES: Mapping[str, str] = {
    "migrate": "._migrate",
    "prune": "._prune",
    "prune-ended": "._erase",
    "erase": "._erase",
    "topology": "._migrate",
    "worker": "._serve",
    "effects": "._dispatch",
    "effects-dead-letters": "._effects_dead_letters",
    "quarantine": "._quarantine",
    "timers": "._timers",
    "call": "._call",
    "gateway": "._gateway",
    "dev": "._gateway",
    "inspect": "._inspect",
    "list": "._listing",
    "asyncapi": "._asyncapi",
    "projections": "._projections",
    "projection": "._projection",
    "export": "._export",
    "replay-check": "._replay_check",
    "repartition": "._repartition",
}


def _parser() -> argparse.ArgumentParser:
    """The command's parser, with which tests/deploy checks the manifests' command lines."""
    return parser()


def _subcommand(name: str) -> Subcommand:
    module = importlib.import_module(_MODULES[name], __name__)
    found: Subcommand = getattr(module, f"{name.replace('-', '_')}_command")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pachyderm`` console command."""
    command_line = _parser()
    arguments = command_line.parse_args(argv)
    try:
        settings = settings_of(arguments)
    except PachydermError as error:
        print(f"pachyderm: {error}", file=sys.stderr)
        return 1
    if arguments.command_name in NEEDS_APP and settings.app is None:
        subparser(command_line, arguments.command_name).error(
            "name the app (module[:attribute]) or set PACHYDERM_APP"
        )
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        outcome = run(_subcommand(arguments.command_name)(settings, arguments))
    except (PachydermError, ValueError) as error:
        print(f"pachyderm: {error}", file=sys.stderr)
        return 1
    return outcome if isinstance(outcome, int) else 0
