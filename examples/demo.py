"""A first run: the example entities, embedded, on SQLite.

    python -m examples.demo

Every command carries a fixed id, so a second run applies nothing twice: it
prints the stored replies instead (guarantee 3 of DESIGN.md at work).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from pachyderm import App, PachydermError, Ref
from pachyderm._processor import Processor
from pachyderm._settings import Settings
from pachyderm.store import EventStore, open_store

from . import bank, counter

APP = App([counter.Counter, bank.Account], effect_handlers=[counter.AdminMailer()])
ALICE, BOB, CAROL = bank.account("alice"), bank.account("bob"), bank.account("carol")
VISITS = counter.Counter.ref("visits")

SCRIPT: list[tuple[str, Ref, Any]] = [
    ("open account alice", ALICE, bank.Open(owner="Alice")),
    ("open account bob", BOB, bank.Open(owner="Bob")),
    ("deposit 100.00 to alice", ALICE, bank.Deposit(amount=100_00)),
    ("withdraw 500.00 from alice", ALICE, bank.Withdraw(amount=500_00)),
    ("transfer 30.00 alice -> bob", ALICE, bank.Transfer(to=BOB.id, amount=30_00)),
    ("transfer 10.00 alice -> carol", ALICE, bank.Transfer(to=CAROL.id, amount=10_00)),
    *[("increment counter visits by 3", VISITS, counter.Increment(amount=3))] * 4,
]


async def run_script(processor: Processor) -> None:
    for step, (label, ref, command) in enumerate(SCRIPT, start=1):
        result = await processor.process(ref, command, command_id=f"demo-step-{step}")
        if result.rejection:
            said = f"rejected: {result.rejection.reason} {result.rejection.detail or ''}"
        else:
            said = json.dumps(result.reply)
            said += "  (already applied: stored reply)" if result.duplicate else ""
        print(f"{step:>2}. {label:<30} -> {said}")
        delivered = await processor.drain_outbox(config={"to": "admin@example.com"})
        if delivered:
            print(f"    {delivered} effect(s) delivered after the commit")


async def show_balances(store: EventStore) -> None:
    account = APP.entity_type("account")
    for name, ref in (("alice", ALICE), ("bob", BOB), ("carol", CAROL)):
        loaded = await store.load(ref)
        print(f"    {name:<6} version {loaded.version}  {account.replay(loaded)!r}")


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="    effect: %(message)s", stream=sys.stdout)
    settings = Settings()
    url = settings.database_url.get_secret_value()
    store = await open_store(url, namespace=settings.namespace)
    try:
        await store.migrate()
        print(f"Pachyderm demo on {url.split('@')[-1]}: an entity never forgets.\n")
        await run_script(Processor(APP, store))
        print("\nBalances, folded from each account's stored history:")
        await show_balances(store)
    finally:
        await store.close()
    print(
        "\nRun it again: every command id was seen, so nothing applies twice.\n"
        "Inspect a history: .venv/bin/pachyderm inspect --app examples.demo:APP account alice --key"
    )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except PachydermError as error:
        raise SystemExit(f"demo failed: {error}") from error
