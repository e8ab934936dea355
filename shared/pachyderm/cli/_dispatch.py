"""``pachyderm effects MODULE``: the effect dispatcher of the module's handlers."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from .._dispatcher import EffectDispatcher
from .._effect_retries import EffectRetry
from .._errors import PachydermError
from .._loading import load_app
from .._settings import Settings
from ..telemetry import Check, broker_check
from ._runtime import broker, health_endpoints, observed, starting, stop_on_signals, worker_id

log = logging.getLogger("pachyderm.effects")


async def run_effects(
    settings: Settings, app_spec: str, config: dict[str, Any], group: str
) -> None:
    app = load_app(app_spec)
    if not app.effect_handlers:
        log.warning("%s registers no effect handlers: nothing to dispatch", app_spec)
    name = f"effects-{worker_id(settings)}"
    checks: dict[str, Check] = {"startup": starting}
    with observed(settings, "pachyderm-effects", name):
        stop = stop_on_signals()
        async with (
            health_endpoints(checks, settings),
            broker(settings, name) as transport,
        ):
            dispatcher = EffectDispatcher(
                transport, app.effect_handlers, config, group=group, retry=effect_retry(settings)
            )
            await dispatcher.start()
            checks.clear()
            checks["broker"] = broker_check(transport)
            log.info("dispatching effects to %s", ", ".join(h.name for h in app.effect_handlers))
            await stop.wait()
            await dispatcher.stop()


def effect_retry(settings: Settings) -> EffectRetry:
    """How a dispatcher retries a failing handler, from ``PACHYDERM_EFFECT_*``."""
    if settings.effect_retry_longest < settings.effect_retry_first:
        raise PachydermError(
            "PACHYDERM_EFFECT_RETRY_LONGEST must be at least PACHYDERM_EFFECT_RETRY_FIRST"
        )
    return EffectRetry(
        settings.effect_attempts, settings.effect_retry_first, settings.effect_retry_longest
    )


async def effects_command(settings: Settings, arguments: argparse.Namespace) -> None:
    """``pachyderm effects [APP] --config JSON --group NAME``; APP defaults to
    ``PACHYDERM_APP``, ``--config`` is parsed (a JSON object) by the command line."""
    assert settings.app is not None, "the command line checks it"
    await run_effects(settings, settings.app, arguments.config, arguments.group)
