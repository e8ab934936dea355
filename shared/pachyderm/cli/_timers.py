"""``pachyderm timers release TYPE ID TIMER [--key]``: let a timer the workers held after
its attempts (a poison: see :mod:`pachyderm.worker._timer_poison`) fire again.

Safe beside running workers: the partition's owner finds it on its next read (within
a second) and fires it as a risky fire (counted first, alone), so a timer that is
still a poison is held again after its attempts.
"""

from __future__ import annotations

import argparse
import json
import logging

from .._errors import PachydermError
from .._settings import Settings
from ._inspect import entity_ref
from ._store import settings_store

log = logging.getLogger("pachyderm.timers")


async def timers_command(settings: Settings, arguments: argparse.Namespace) -> None:
    ref = entity_ref(arguments)
    async with settings_store(settings) as store:
        released = await store.release_timer(ref.id, arguments.timer)
    if not released:
        raise PachydermError(f"{ref} has no pending timer {arguments.timer!r}")
    log.info(
        "timer %r of %s released by an operator",
        arguments.timer,
        ref,
        extra={"event": "timer.released", "entity_id": str(ref.id), "timer_key": arguments.timer},
    )
    print(json.dumps({"entity": str(ref), "timer": arguments.timer, "released": True}))
