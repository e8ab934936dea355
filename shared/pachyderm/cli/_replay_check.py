"""``pachyderm replay-check APP``: stored histories, read and folded by the current code.

From the store (every entity of the app's types, or ``--type``'s, or a random
``--sample``) or from an export file (``--from``); each entity whose history no
longer decodes or folds, or whose fold differs from its snapshot, is reported.
Exit status 4 when anything was found (1 stays "the check could not run").
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from .._histories import StoredHistory
from .._history_file import HistoryReader
from .._loading import load_app
from .._replay_check import ReplayProblem, ReplayReport, replay_check
from .._settings import Settings
from ..store import open_store

PROBLEMS_FOUND = 4


class _Progress:
    """A progress bar on stderr, when stderr is a terminal: entities (of how many, when
    known), events, problems and the rate."""

    def __init__(self, total: int | None, enabled: bool, console: Console | None = None) -> None:
        console = console or Console(stderr=True)
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("replay-check"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[events]:,} events, {task.fields[problems]} problems"),
            TextColumn("{task.fields[rate]:,.0f} events/s"),
            TimeElapsedColumn(),
            console=console,
            disable=not (enabled and console.is_terminal),
            transient=True,
        )
        self.task: TaskID = self.bar.add_task("", total=total, events=0, problems=0, rate=0.0)
        self.events = 0
        self.problems = 0

    def checked(self, history: StoredHistory, problems: list[ReplayProblem]) -> None:
        self.events += len(history.events)
        self.problems += len(problems)
        elapsed = self.bar.tasks[0].elapsed or 0.0
        rate = self.events / elapsed if elapsed > 0 else 0.0
        self.bar.update(self.task, advance=1, events=self.events, problems=self.problems, rate=rate)


async def replay_check_command(settings: Settings, arguments: argparse.Namespace) -> int:
    assert settings.app is not None, "the command line checks it"
    app = load_app(settings.app)
    progress = _Progress(arguments.sample, enabled=not arguments.no_progress)
    check = functools.partial(replay_check, app, types=arguments.type, on_checked=progress.checked)
    with progress.bar:
        if arguments.from_file == "-":
            report = await check(HistoryReader(sys.stdin.buffer))
        elif arguments.from_file:
            report = await check(arguments.from_file)
        else:
            url = settings.database_url.get_secret_value()
            store = await open_store(url, namespace=settings.namespace, shards=settings.shard_map())
            try:
                report = await check(store, sample=arguments.sample, seed=arguments.seed)
            finally:
                await store.close()
    _print(report, arguments.json)
    return 0 if report.ok else PROBLEMS_FOUND


def _print(report: ReplayReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
        return
    for problem in report.problems:
        print(problem)
    verdict = "ok" if report.ok else "PROBLEMS"
    print(f"replay-check {verdict}: {report.summary()}")
