"""``pachyderm export`` and ``pachyderm replay-check`` on the bank example's histories:
the file round trip, and each kind of problem the check reports (SQLite, in-process;
PostgreSQL at the end)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from examples import bank, counter
from pachyderm import App, _codec
from pachyderm._embedded import embedded
from pachyderm._histories import StoredHistory, read_history, sample_refs, store_histories
from pachyderm._history_file import ExportFileError, HistoryReader, HistoryWriter, export_histories
from pachyderm._replay_check import check_history, replay_check
from pachyderm.cli import main
from pachyderm.cli._replay_check import _Progress
from pachyderm.store import (
    Change,
    Committed,
    EventStore,
    PostgresEventStore,
    Snapshot,
    open_store,
)
from pachyderm.worker import WorkerOptions

OWNERS = ("alice", "bob", "carol", "dave")


async def seed(database: str) -> None:
    """Four accounts, a snapshot every 3 events: some have one, some not."""
    options = WorkerOptions(snapshot_every=3)
    async with embedded(App([bank.Account]), database, options=options) as fleet:
        for number, owner in enumerate(OWNERS):
            await fleet.client.call(bank.account(owner), bank.Open(owner=owner))
            for amount in range(1, 2 * number + 1):
                await fleet.client.call(bank.account(owner), bank.Deposit(amount=amount))
        transfer = bank.Transfer(to=bank.account("alice").id, amount=2)
        await fleet.client.call(bank.account("dave"), transfer)


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    asyncio.run(seed(url))
    return url


async def histories(database: str) -> list[StoredHistory]:
    store = await open_store(database)
    try:
        return [h async for h in store_histories(store, ["account"])]
    finally:
        await store.close()


class BrokenFold(bank.Account):
    """The bank's account whose ``update`` now counts a deposit twice."""

    type_name = "account"

    def update(self, event: Any, state: bank.AccountState) -> bank.AccountState:
        if isinstance(event, bank.Deposited):
            return state.model_copy(update={"balance": state.balance + 2 * event.amount})
        return super().update(event, state)


class FailingFold(bank.Account):
    """The bank's account whose ``update`` raises on a transfer."""

    type_name = "account"

    def update(self, event: Any, state: bank.AccountState) -> bank.AccountState:
        if isinstance(event, bank.TransferSent):
            raise RuntimeError("no transfers here")
        return super().update(event, state)


broken_fold = App([BrokenFold])


def test_export_writes_every_history_and_reads_back_as_stored(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = asyncio.run(histories(database))
    assert [h.ref for h in stored] == sorted((bank.account(o) for o in OWNERS), key=lambda r: r.id)
    assert sum(h.snapshot is not None for h in stored) == 3  # 1, 3, 5 and 7 events: not alice
    for file_format in ("jsonl", "msgpack"):
        output = tmp_path / f"bank.{file_format}"
        argv = ["--database-url", database, "export", "examples.bank", "--output", str(output)]
        assert main(argv) == 0
        assert "exported 4 entities, 18 events" in capsys.readouterr().err
        with output.open("rb") as source:
            reader = HistoryReader(source)
            assert reader.header.types == ("account",)
            assert list(reader) == stored  # every byte, time and schema version as stored
    header = json.loads((tmp_path / "bank.jsonl").read_text().splitlines()[0])
    assert header["record"] == "export"
    assert header["format_version"] == 1
    assert not (tmp_path / "bank.jsonl.partial").exists()


def test_export_to_stdout_as_json_lines(
    database: str, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["--database-url", database, "export", "examples.bank", "--type", "account"]) == 0
    lines = capsysbinary.readouterr().out.decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["record"] for r in records].count("entity") == 4
    assert records[-1] == {"record": "end", "entities": 4, "events": 18}
    opened = next(r for r in records if r["record"] == "event")
    assert opened["name"] == "Opened"
    assert opened["schema_version"] == 1
    assert set(opened["data"]) == {"owner"}


def test_replay_check_passes_on_untouched_code(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--database-url", database, "replay-check", "examples.bank", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert (report["entities"], report["events"], report["problems"]) == (4, 18, [])
    assert report["snapshots_compared"] == 3
    assert report["events_per_s"] > 0
    export = tmp_path / "bank.msgpack"
    argv = ["--database-url", database, "export", "examples.bank", "--output", str(export)]
    assert main(argv) == 0
    assert main(["replay-check", "examples.bank", "--from", str(export)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("replay-check ok: 4 entities, 18 events, 0 problems")


def test_replay_check_finds_a_fold_that_differs_from_its_snapshot(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app = f"{__name__}:broken_fold"
    assert main(["--database-url", database, "replay-check", app, "--json"]) == 4
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    found = {(p["id"], p["kind"], p["version"]) for p in report["problems"]}
    # bob (3 events), carol (5) and dave (8, his last snapshot at 6) deposited.
    expected = {("bob", 3), ("carol", 3), ("dave", 6)}
    assert found == {(str(bank.account(o).id), "snapshot", v) for o, v in expected}
    assert all("the fold gives" in p["error"] for p in report["problems"])
    assert main(["--database-url", database, "replay-check", app, "--type", "account"]) == 4
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("replay-check PROBLEMS: 4 entities, 18 events, 3 problems")


def test_replay_check_names_the_event_that_does_not_fold_or_decode(database: str) -> None:
    stored = asyncio.run(histories(database))
    dave = next(h for h in stored if h.ref == bank.account("dave"))
    problems, _ = check_history(App([FailingFold]), dave)
    (problem,) = problems
    assert (problem.kind, problem.version, problem.event) == ("fold", 8, "TransferSent")
    assert "no transfers here" in problem.error
    # An event whose stored data misses a field the code needs.
    damaged = [*dave.events]
    damaged[1] = dataclasses.replace(damaged[1], data=b"\x80")  # {}: no amount
    problems, _ = check_history(App([bank.Account]), StoredHistory(dave.ref, damaged, None))
    (problem,) = problems
    assert (problem.kind, problem.version, problem.event) == ("decode", 2, "Deposited")
    assert "amount" in problem.error
    assert str(problem).startswith(f"{dave.ref} at v2 Deposited (schema 1): decode:")


def test_replay_check_reports_gaps_and_unknown_types(database: str) -> None:
    stored = asyncio.run(histories(database))
    carol = next(h for h in stored if h.ref == bank.account("carol"))
    gapped = StoredHistory(carol.ref, [carol.events[0], *carol.events[2:]], None)
    report = asyncio.run(replay_check(App([bank.Account]), [gapped, carol]))
    (problem,) = report.problems
    assert problem.kind == "history"
    assert "expected version 2, found 3" in problem.error
    assert (report.entities, report.entities_with_problems) == (2, 1)
    report = asyncio.run(replay_check(App([]), [carol]))
    assert [p.kind for p in report.problems] == ["type"]


def test_replay_check_a_sample(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--database-url", database, "replay-check", "examples.bank", "--json"]
    assert main([*argv, "--sample", "2", "--seed", "7"]) == 0
    assert json.loads(capsys.readouterr().out)["entities"] == 2
    assert main([*argv, "--sample", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["entities"] == 4
    with pytest.raises(SystemExit):
        main([*argv, "--sample", "0"])
    with pytest.raises(SystemExit):
        main([*argv, "--sample", "2", "--from", "x.jsonl"])


def test_a_damaged_or_truncated_export_is_refused(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = asyncio.run(histories(database))
    whole = io.BytesIO()
    writer = HistoryWriter(whole, "jsonl", ["account"])
    for history in stored:
        writer.write(history)
    writer.finish()
    lines = whole.getvalue().splitlines(keepends=True)
    cases = {
        "truncated": b"".join(lines[:-1]),
        "cut in an entity": b"".join(lines[:3]),
        "empty": b"",
        "not an export": b'{"record": "entity"}\n',
        "a later format": lines[0].replace(b'"format_version":1', b'"format_version":2'),
        "not JSON": lines[0] + b"{oops\n",
        "NaN": lines[0] + b'{"record": NaN}\n',
        "not a map": lines[0] + b"[1, 2]\n",
        "wrong totals": b"".join(lines[:-1]) + b'{"record":"end","entities":5,"events":18}\n',
        "an event where an entity goes": lines[0] + lines[2],
        "an entity where an event goes": lines[0] + lines[1] + lines[1],
        "a damaged entity": lines[0] + lines[1].replace(b'"id":"', b'"id":"x'),
        "a damaged event": lines[0]
        + lines[1]
        + lines[2].replace(b'"version":1', b'"version":"one"'),
        "not msgpack": b"\xc1\xc1\xc1",
    }
    for case, content in cases.items():
        with pytest.raises(ExportFileError):  # noqa: PT012
            list(HistoryReader(io.BytesIO(content)))
            pytest.fail(case)
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_bytes(cases["truncated"])
    assert main(["replay-check", "examples.bank", "--from", str(truncated)]) == 1
    assert "the export ends before the end record" in capsys.readouterr().err
    assert main(["replay-check", "examples.bank", "--from", str(tmp_path / "nope")]) == 1
    assert "cannot read" in capsys.readouterr().err
    unwritable = ["--database-url", database, "export", "examples.bank"]
    assert main([*unwritable, "--output", str(tmp_path / "no" / "such.jsonl")]) == 1
    assert "cannot write" in capsys.readouterr().err
    unknown_format: Any = "csv"
    with pytest.raises(ValueError, match="unknown export format"):
        HistoryWriter(io.BytesIO(), unknown_format, ["account"])


def test_what_json_cannot_hold_needs_msgpack(database: str) -> None:
    (first, *_) = asyncio.run(histories(database))
    nan = dataclasses.replace(first.events[0], data=_codec.encode({"owner": float("nan")}))
    odd = dataclasses.replace(first, events=(nan, *first.events[1:]))
    with pytest.raises(ExportFileError, match=f"{first.ref} event 1 cannot .* msgpack"):
        HistoryWriter(io.BytesIO(), "jsonl", ["account"]).write(odd)
    written = io.BytesIO()
    writer = HistoryWriter(written, "msgpack", ["account"])
    writer.write(odd)
    writer.finish()
    (read,) = HistoryReader(io.BytesIO(written.getvalue()))
    assert read == odd


def test_replay_check_from_stdin_and_of_chosen_types(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = asyncio.run(histories(database))
    export = io.BytesIO()
    writer = HistoryWriter(export, "msgpack", ["account"])
    for history in stored:
        writer.write(history)
    writer.finish()
    stdin = io.TextIOWrapper(io.BytesIO(export.getvalue()))
    monkeypatch.setattr("sys.stdin", stdin)
    argv = ["replay-check", "examples.bank", "--from", "-", "--type", "account", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["entities"] == 4
    app = App([bank.Account])
    mixed = App([bank.Account, OtherCounter])
    report = asyncio.run(replay_check(mixed, stored, types=["other_counter"]))
    assert report.entities == 0  # no account checked
    report = asyncio.run(replay_check(app, _async(stored), types=["account"]))
    assert (report.entities, report.ok) == (4, True)
    with pytest.raises(ValueError, match="a sample is drawn from a store"):
        asyncio.run(replay_check(app, "some.jsonl", sample=3))
    with pytest.raises(ValueError, match="a sample holds 1 entity or more"):
        asyncio.run(_sample_of_none(database))


async def _async(histories: list[StoredHistory]) -> AsyncIterator[StoredHistory]:
    for history in histories:
        yield history


async def _sample_of_none(database: str) -> None:
    store = await open_store(database)
    try:
        await sample_refs(store, ["account"], 0, random.Random(1))
    finally:
        await store.close()


class OtherCounter(counter.Counter):
    """A second entity type, to choose among."""


@pytest.mark.postgres
async def test_export_and_replay_check_on_postgresql(
    postgres_dsn: str, namespace: str, tmp_path: Path
) -> None:
    """The same from PostgreSQL, through the library's functions, paging entities."""
    store = await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=2)
    try:
        await store.migrate()
        await commit_accounts(store, 150)  # more than a page of the listing
        output = tmp_path / "bank.jsonl"
        with output.open("wb") as out:
            written = await export_histories(store, ["account"], out)
        assert (written.entities, written.events) == (150, 150 * 4)
        with output.open("rb") as source:
            from_file = list(HistoryReader(source))
        assert from_file == [await read_history(store, h.ref) for h in from_file]
        assert all(h.snapshot is not None and h.snapshot.version == 3 for h in from_file)
        report = await replay_check(App([bank.Account]), store_histories(store, ["account"]))
        assert report.ok, report.problems
        assert (report.entities, report.events, report.snapshots_compared) == (150, 600, 150)
        report = await replay_check(broken_fold, store, sample=5, seed=1)
        assert (report.entities, len(report.problems)) == (5, 5)
    finally:
        await store.drop_namespace()
        await store.close()


async def commit_accounts(store: EventStore, count: int) -> None:
    """``count`` accounts of 4 events, each committed as two changes, the first (3 events)
    with its snapshot, as a worker snapshotting every 3 events would."""
    account = App([bank.Account]).entity_type("account")
    for number in range(count):
        ref = bank.account(f"owner-{number}")
        first = [bank.Opened(owner=f"owner-{number}"), bank.Deposited(amount=5)]
        first.append(bank.Deposited(amount=number + 1))
        state = account.evolve(account.initial_state(), first)
        snapshot = Snapshot(3, account.encode_state(state))
        head = Change(ref, 0, "c1", [account.encode_event(e) for e in first], snapshot=snapshot)
        tail = Change(ref, 3, "c2", [account.encode_event(bank.Withdrawn(amount=1))])
        assert [type(o) for o in await store.commit([head, tail])] == [Committed, Committed]


def test_the_progress_bar_counts_entities_events_and_problems(database: str) -> None:
    """On a terminal: entities of how many, events, problems and the rate; else nothing."""
    stored = asyncio.run(histories(database))
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160)
    progress = _Progress(len(stored), enabled=True, console=console)
    with progress.bar:
        report = asyncio.run(replay_check(broken_fold, stored, on_checked=progress.checked))
    shown = screen.getvalue()
    assert f"{len(stored)}/{len(stored)}" in shown
    assert f"{report.events} events, {len(report.problems)} problems" in shown
    assert "events/s" in shown
    quiet = io.StringIO()
    off = _Progress(None, enabled=True, console=Console(file=quiet, force_terminal=False))
    with off.bar:
        off.checked(stored[0], [])
    assert quiet.getvalue() == ""


def test_snapshots_of_other_code_are_ignored_and_bad_ones_reported(database: str) -> None:
    stored = asyncio.run(histories(database))
    dave = next(h for h in stored if h.ref == bank.account("dave"))
    assert dave.snapshot is not None
    app = App([bank.Account])
    other_code = dataclasses.replace(dave.snapshot, fingerprint="state=2;update=1")
    report = asyncio.run(replay_check(app, [dataclasses.replace(dave, snapshot=other_code)]))
    assert report.ok
    assert (report.snapshots_compared, report.snapshots_ignored) == (0, 1)
    # A changed fold is not compared with a snapshot of other code: workers rebuild it.
    report = asyncio.run(
        replay_check(broken_fold, [dataclasses.replace(dave, snapshot=other_code)])
    )
    assert report.ok
    past_the_end = dataclasses.replace(dave.snapshot, version=dave.version + 1)
    problems, use = check_history(app, dataclasses.replace(dave, snapshot=past_the_end))
    assert [(p.kind, use) for p in problems] == [("history", None)]
    assert "after the last event (8)" in problems[0].error
    unreadable = dataclasses.replace(dave.snapshot, state=b"\x81\xa7balance\xa3ten")
    problems, use = check_history(app, dataclasses.replace(dave, snapshot=unreadable))
    assert [(p.kind, p.version, use) for p in problems] == [("snapshot", 6, "compared")]
    assert "the snapshot does not read" in problems[0].error


@pytest.mark.postgres
def test_the_commands_on_postgresql(
    postgres_dsn: str, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``export`` and ``replay-check`` as a user runs them against a fleet's namespace."""

    async def seeded() -> None:
        store = await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=2)
        try:
            await store.migrate()
            await commit_accounts(store, 12)
        finally:
            await store.close()

    async def dropped() -> None:
        store = await PostgresEventStore.connect(postgres_dsn, schema=namespace, max_size=1)
        await store.drop_namespace()
        await store.close()

    asyncio.run(seeded())
    try:
        fleet = ["--database-url", postgres_dsn, "--namespace", namespace]
        output = tmp_path / "accounts.msgpack"
        assert main([*fleet, "export", "examples.bank", "--output", str(output)]) == 0
        assert "exported 12 entities, 48 events" in capsys.readouterr().err
        argv = [*fleet, "replay-check", "examples.bank_v2", "--json"]
        assert main([*argv, "--sample", "5", "--seed", "3"]) == 0
        assert json.loads(capsys.readouterr().out)["entities"] == 5
        assert main(["replay-check", "examples.bank_v2", "--from", str(output), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert (report["entities"], report["events"], report["snapshots_compared"]) == (12, 48, 12)
        assert main([*fleet, "replay-check", f"{__name__}:broken_fold", "--no-progress"]) == 4
    finally:
        asyncio.run(dropped())
