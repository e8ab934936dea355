"""What the real fleet's worker processes serve: the gateway tests' app (Counter, Account,
an entity whose code raises, and one with a query), loaded as ``tests.gateway.fleet_app:app``."""

from __future__ import annotations

from .serving import APP

app = APP
