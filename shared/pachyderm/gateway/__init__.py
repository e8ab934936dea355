"""The HTTP gateway: commands, queries, state and history of entities over JSON.

An ASGI application (Starlette) in front of the same RPC path as
:class:`~pachyderm.Client`, served by uvicorn. ``pachyderm gateway`` runs it
against a RabbitMQ + PostgreSQL fleet, ``pachyderm dev`` against the
embedded fleet; see ``gateway/README.md``.
"""

from .._serving import listen, serve
from ._asgi import create_app
from ._asyncapi import asyncapi_document
from ._auth import Right, Tokens
from ._options import GatewayOptions

__all__ = [
    "GatewayOptions",
    "Right",
    "Tokens",
    "asyncapi_document",
    "create_app",
    "listen",
    "serve",
]
