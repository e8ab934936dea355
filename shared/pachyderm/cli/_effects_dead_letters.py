"""``pachyderm effects-dead-letters list|replay``: the effects whose handler failed every
try, waiting in the namespace's dead-letter queue.

``list`` reads them and leaves them there (commands dead-lettered beside them are
not shown). ``replay`` publishes them to the effects exchange again, for a handler
fixed since, and removes each from the dead-letter queue once the broker confirmed
its copy: ``--effect-id`` (repeatable) picks some, ``--all`` takes every one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .._errors import PachydermError
from .._settings import Settings
from ..transport._rabbitmq_dead_letters import DeadLetteredEffect
from ._runtime import broker


def _record(dead: DeadLetteredEffect) -> dict[str, Any]:
    return {
        "effect_id": dead.effect_id,
        "handler": dead.handler,
        "queue": dead.queue,
        "reason": dead.reason,
        "deaths": dead.deaths,
        "died_at": dead.died_at.isoformat() if dead.died_at is not None else None,
        "source_entity_id": dead.message.headers.get("pachyderm-source-entity-id"),
        "source_command_id": dead.message.headers.get("pachyderm-source-command-id"),
    }


def _print(effects: Sequence[DeadLetteredEffect], as_json: bool) -> None:
    if as_json:
        print(json.dumps([_record(dead) for dead in effects], indent=2))
        return
    for dead in effects:
        died = dead.died_at.isoformat() if dead.died_at is not None else "?"
        print(
            f"{dead.effect_id}  handler={dead.handler}  queue={dead.queue}"
            f"  reason={dead.reason}  deaths={dead.deaths}  died_at={died}"
        )


async def effects_dead_letters_command(
    settings: Settings, arguments: argparse.Namespace
) -> int | None:
    """Exit status 1 when an ``--effect-id`` asked for is not in the dead-letter queue."""
    chosen = arguments.all or arguments.effect_id
    if (arguments.action == "replay") != bool(chosen):
        raise PachydermError(
            "replay needs --effect-id ID (repeatable) or --all"
            if arguments.action == "replay"
            else "list shows every dead-lettered effect: --effect-id and --all are for replay"
        )
    async with broker(settings, "pachyderm-effects-dead-letters") as transport:
        if arguments.action == "list":
            _print(await transport.dead_lettered_effects(), arguments.json)
            return None
        wanted = None if arguments.all else set(arguments.effect_id or ())
        replayed = await transport.replay_dead_lettered_effects(wanted)
    if arguments.json:
        _print(replayed, as_json=True)
    else:
        print(f"replayed {len(replayed)} dead-lettered effects")
    if wanted is not None and (missing := wanted - {dead.effect_id for dead in replayed}):
        print(f"not in the dead-letter queue: {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    return None
