"""How a gateway admits requests, from settings."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from .._settings import Settings
from ._auth import Tokens
from ._following import DEFAULT_MAX_STREAMS

log = logging.getLogger("pachyderm.gateway")

# What a browser on this machine calls the loopback interface.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """Authentication and limits of a gateway.

    ``tokens`` is required and ``None`` only to turn authentication off.
    ``max_body`` bounds a request body in bytes. ``hosts``, when given, lists
    the only host names requests may address (see :meth:`for_development`).
    ``max_streams`` bounds the event streams open at once (``GET .../events``);
    one more is answered 503. ``admin_token`` opens the admin routes
    (``PACHYDERM_ADMIN_TOKEN``); None keeps them closed (403).
    """

    tokens: Tokens | None
    max_body: int = 1024 * 1024
    hosts: Collection[str] | None = None
    max_streams: int = DEFAULT_MAX_STREAMS
    admin_token: str | None = None

    def __post_init__(self) -> None:
        if self.max_body < 1:
            raise ValueError("max_body must be at least 1 byte")
        if self.max_streams < 1:
            raise ValueError("max_streams must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayOptions:
        """Bearer tokens from ``PACHYDERM_GATEWAY_TOKENS``, unless ``PACHYDERM_GATEWAY_AUTH``
        is false; ``ValueError`` when authentication is on and no token is configured."""
        if not settings.gateway_auth:
            log.warning(
                "gateway authentication is OFF (PACHYDERM_GATEWAY_AUTH=false): whoever reaches"
                " the gateway may call and read every entity"
            )
            return cls(
                tokens=None, max_body=settings.gateway_max_body, admin_token=_admin(settings)
            )
        text = settings.gateway_tokens.get_secret_value()
        if not text.strip():
            raise ValueError(
                "the gateway needs bearer tokens: set PACHYDERM_GATEWAY_TOKENS, e.g."
                " 's3cret=call+read' (or PACHYDERM_GATEWAY_AUTH=false, for local development"
                " only)"
            )
        return cls(
            tokens=Tokens.parse(text),
            max_body=settings.gateway_max_body,
            admin_token=_admin(settings),
        )

    @classmethod
    def for_development(cls, settings: Settings) -> GatewayOptions:
        """No authentication, for ``pachyderm dev``: only for a gateway on loopback, which
        answers only requests addressed to a loopback name (no DNS rebinding)."""
        return cls(
            tokens=None,
            max_body=settings.gateway_max_body,
            hosts=LOOPBACK_HOSTS,
            admin_token=_admin(settings),
        )


def _admin(settings: Settings) -> str | None:
    return settings.admin_token.get_secret_value().strip() or None
