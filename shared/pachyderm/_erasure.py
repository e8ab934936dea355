"""Erasing an entity for good (personal data), audited.

Every erasure, from ``pachyderm erase`` or the gateway's admin route, goes
through :func:`erase`, which writes one structured line to the
``pachyderm.audit`` logger: who asked, when (the log time), what entity, and
how many rows of each kind went. Never any of the data: the line says that
something was erased, not what it said.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from ._reference import Ref
from .store import Erasure, EventStore

audit_log = logging.getLogger("pachyderm.audit")


async def erase(store: EventStore, ref: Ref, *, actor: str) -> Erasure:
    """Erase ``ref`` from ``store`` (see :meth:`EventStore.erase`) on behalf of ``actor``."""
    try:
        erasure = await store.erase(ref)
    except Exception as error:
        audit_log.error(
            "erasing %s for %s failed: %s",
            ref,
            actor,
            type(error).__name__,
            extra={"audit": "erase", "outcome": "failed", **_who(ref, actor)},
        )
        raise
    counts = {key: value for key, value in asdict(erasure).items() if key in _COUNTED}
    audit_log.warning(
        "erased %s for %s: %s; tombstone kept at version %d",
        ref,
        actor,
        ", ".join(f"{count} {what}" for what, count in counts.items()),
        erasure.version,
        extra={
            "audit": "erase",
            "outcome": "erased",
            **_who(ref, actor),
            "tombstone_version": erasure.version,
            "deleted": counts,
        },
    )
    return erasure


_COUNTED = ("events", "snapshots", "commands", "timers", "log_rows", "effects", "quarantined")


def _who(ref: Ref, actor: str) -> dict[str, str]:
    return {"actor": actor, "entity_type": ref.type, "entity_id": str(ref.id)}
