"""Readiness checks: can this process do its work right now?

A check returns None when ready and otherwise says why not, in a few words;
a check that raises, or takes longer than :data:`CHECK_TIMEOUT`, means not
ready either. Verdicts are served without authentication, so an error's
details go to the log only.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping

from ..store import EventStore
from ..transport import Message, Transport

log = logging.getLogger("pachyderm.health")

Check = Callable[[], Awaitable[str | None]]
CHECK_TIMEOUT = 2.0
# No entity has this id: looking it up costs the database one index probe.
_NO_ENTITY = uuid.UUID(int=0)


def database_check(store: EventStore) -> Check:
    """Ready while the event store answers a query."""

    async def database() -> None:
        await store.versions([_NO_ENTITY])

    return database


def broker_check(transport: Transport) -> Check:
    """Ready while the broker connection is up and takes a message."""
    # A reply to an address nobody listens at, which the broker drops. While the
    # connection is lost, publishing waits for the reconnect: the check times out.
    probe = Message(b"", routing_key=f"{transport.topology.namespace}.readiness-probe")

    async def broker() -> None:
        await transport.publish_replies([probe])

    return broker


async def readiness(checks: Mapping[str, Check]) -> dict[str, str | None]:
    """Every check at once: by name, None where ready, else why not."""
    names = list(checks)
    verdicts = await asyncio.gather(*(_verdict(name, checks[name]) for name in names))
    return dict(zip(names, verdicts, strict=True))


async def _verdict(name: str, check: Check) -> str | None:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT}s"
    except Exception as error:  # a check that breaks is an answer: not ready
        log.warning("readiness check %r failed: %r", name, error)
        return f"failed: {type(error).__name__}"
