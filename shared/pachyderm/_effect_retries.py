"""Retrying an external effect handler: exponential backoff with jitter, then give up.

A dispatcher tries a handler up to ``attempts`` times for one delivery of an
effect, waiting ``first * 2**(n-1)`` seconds (at most ``longest``) plus a random
jitter of up to ``first`` seconds after the n-th failure, so many dispatchers
that failed together do not retry in step. After the last try the error goes
up, and the transport dead-letters the effect (``pachyderm effects-dead-letters``
lists and replays it). Tenacity does the waiting and counting.

Invariants: only a handler's own failure is retried; an effect that cannot be
dispatched at all (no handler, no effect id, an undecodable payload) fails
before this and is dead-lettered at once. The effect stays unacknowledged while
it waits, so a dispatcher stopped mid-backoff hands it back to the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from .telemetry._telemetry import instruments

log = logging.getLogger("pachyderm.effects")


@dataclass(frozen=True, slots=True)
class EffectRetry:
    """How often and how patiently a failing handler is tried for one delivery."""

    attempts: int = 5
    """Tries in all, the first included; 1: no retry."""
    first: float = 0.5
    """Seconds before the second try; each later wait doubles, plus jitter."""
    longest: float = 30.0
    """The longest wait between two tries, jitter aside."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("an effect is tried at least once (attempts >= 1)")
        if self.first <= 0 or self.longest < self.first:
            raise ValueError("retry waits need 0 < first <= longest")


async def retrying(
    retry: EffectRetry, effect_id: str, handler: str, call: Callable[[], Awaitable[None]]
) -> None:
    """Run ``call`` until it returns or has failed ``retry.attempts`` times (its last
    error is raised as it was)."""

    def before_sleep(state: RetryCallState) -> None:
        instruments().effects_retried.add(1, {"handler": handler})
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "effect %s: handler %s failed (try %d of %d), trying again in %.2fs: %r",
            effect_id,
            handler,
            state.attempt_number,
            retry.attempts,
            wait,
            error,
        )

    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(retry.attempts),
        wait=wait_exponential(multiplier=retry.first, max=retry.longest)
        + wait_random(0, retry.first),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            await call()
