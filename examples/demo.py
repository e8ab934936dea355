"""A first run: the example entities on the embedded fleet (SQLite, in-process).

    python -m examples.demo

The same worker, engine and client as a RabbitMQ + PostgreSQL fleet. Every
command carries a fixed id, so a second run applies nothing twice: it prints
the stored replies instead (guarantee 3, "A command applies once", of
README.md's Guarantees at work).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from pachyderm import App, PachydermError, Ref, RejectedError
from pachyderm._client import Client
from pachyderm._embedded import embedded
from pachyderm._settings import load_settings
from pachyderm.store import EventStore

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


async def run_script(client: Client) -> None:
    for step, (label, ref, command) in enumerate(SCRIPT, start=1):
        try:
            reply = await client.call(ref, command, command_id=f"demo-step-{step}")
            said = json.dumps(reply)
        except RejectedError as rejection:
            said = f"rejected: {rejection.reason} {rejection.detail or ''}"
        print(f"{step:>2}. {label:<30} -> {said}")
        await asyncio.sleep(0.05)  # let effects land before the next line prints


async def show_balances(store: EventStore) -> None:
    account = APP.entity_type("account")
    for name, ref in (("alice", ALICE), ("bob", BOB), ("carol", CAROL)):
        loaded = await store.load(ref)
        print(f"    {name:<6} version {loaded.version}  {account.replay(loaded)!r}")


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="    effect: %(message)s", stream=sys.stdout)
    url = load_settings().database_url.get_secret_value()
    print(f"Pachyderm demo, embedded on {url}: an entity never forgets.\n")
    async with embedded(APP, url, effects_config={"to": "admin@example.com"}) as fleet:
        await run_script(fleet.client)
        print("\nBalances, folded from each account's stored history:")
        await show_balances(fleet.store)
    print(
        "\nRun it again: every command id was seen, so nothing applies twice.\n"
        "Inspect a history: .venv/bin/pachyderm inspect --app examples.demo:APP account alice --key"
    )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except PachydermError as error:
        raise SystemExit(f"demo failed: {error}") from error
