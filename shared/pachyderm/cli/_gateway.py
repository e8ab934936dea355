"""``pachyderm gateway`` (the HTTP gateway of a fleet) and ``pachyderm dev`` (the whole
fleet in one process, its gateway on localhost)."""

from __future__ import annotations

import argparse
import logging
import shlex
import socket
from urllib.parse import quote, urlsplit

from .._app import App
from .._client import Client, client_options
from .._embedded import embedded
from .._errors import PachydermError
from .._loading import load_app
from .._serving import url_of
from .._settings import Settings
from ..gateway import GatewayOptions, create_app, listen, serve
from ..store import EventStore, open_store
from ._runtime import broker, observed, stop_on_signals, worker_id

log = logging.getLogger("pachyderm.gateway")

LOOPBACK = "127.0.0.1"


def _listen(host: str, port: int) -> socket.socket:
    try:
        return listen(host, port)
    except OSError as error:
        raise PachydermError(f"cannot listen on {host}:{port}: {error.strerror}") from error


async def _history_store(settings: Settings) -> EventStore | None:
    """The fleet's PostgreSQL store, to read histories from; none for any other URL.

    A SQLite file is an embedded fleet's, whose own gateway is ``pachyderm dev``.
    """
    url = settings.database_url.get_secret_value()
    if urlsplit(url).scheme not in {"postgresql", "postgres"}:
        log.info("no PostgreSQL database in PACHYDERM_DATABASE_URL: serving no history")
        return None
    return await open_store(url, namespace=settings.namespace, shards=settings.shard_map())


async def gateway_command(settings: Settings, _: argparse.Namespace) -> None:
    """``pachyderm gateway [--app APP]``: with the app given, else ``PACHYDERM_APP``'s,
    else none."""
    await run_gateway(settings, settings.app)


async def dev_command(settings: Settings, arguments: argparse.Namespace) -> None:
    """``pachyderm dev [APP] [--port N]``: APP defaults to ``PACHYDERM_APP``."""
    assert settings.app is not None, "the command line checks it"
    await run_dev(settings, settings.app, arguments.port)


async def run_gateway(settings: Settings, app_spec: str | None) -> None:
    """Serve the gateway of the settings' fleet until SIGTERM or SIGINT.

    With ``app_spec``, unknown names and invalid fields are answered at the
    gateway; without, the workers answer them.
    """
    name = f"gateway-{worker_id(settings)}"
    with observed(settings, "pachyderm-gateway", name):
        options = GatewayOptions.from_settings(settings)  # first: a missing token fails fast
        app = load_app(app_spec) if app_spec else None
        stop = stop_on_signals()
        with _listen(settings.gateway_host, settings.gateway_port) as listener:
            store = await _history_store(settings)
            try:
                async with broker(settings, name) as transport:
                    client = Client(
                        app,
                        transport,
                        fleet_check=settings.gateway_fleet_check,
                        **client_options(settings),
                    )
                    await client.start()
                    asgi = create_app(client, store, options, app=app)
                    log.info("gateway of namespace %r on %s", settings.namespace, url_of(listener))
                    await serve(asgi, listener, stop, grace=settings.call_timeout)
            finally:
                if store is not None:
                    await store.close()
        log.info("gateway stopped")


async def run_dev(settings: Settings, app_spec: str, port: int | None) -> None:
    """Run ``app_spec`` embedded (the settings' database, the in-process transport) with
    its gateway on 127.0.0.1, without authentication, until SIGTERM or SIGINT."""
    app = load_app(app_spec)
    database_url = settings.database_url.get_secret_value()
    with observed(settings, "pachyderm-dev", f"dev-{worker_id(settings)}"):
        stop = stop_on_signals()
        with _listen(LOOPBACK, settings.gateway_port if port is None else port) as listener:
            async with embedded(app, database_url) as fleet:
                # A client of its own: the fleet's waits the library default, not the setting.
                client = Client(app, fleet.transport, **client_options(settings))
                await client.start()
                options = GatewayOptions.for_development(settings)
                asgi = create_app(client, fleet.store, options, app=app)
                database = urlsplit(database_url).scheme  # never the URL: it may hold a password
                print(_welcome(app, app_spec, database, url_of(listener)), flush=True)
                await serve(asgi, listener, stop, grace=settings.call_timeout)


def _welcome(app: App, app_spec: str, database: str, url: str) -> str:
    """What ``pachyderm dev`` prints: where it listens, and calls to paste."""
    lines = [
        f"pachyderm dev: {app_spec}, the whole fleet in this process ({database},"
        " in-process transport)",
        f"HTTP gateway on {url}: authentication is OFF (development only, loopback only)",
        f"OpenAPI document: {url}/openapi.json",
    ]
    first = next(iter(app), None)
    if first is not None and first.commands.names:
        command = first.commands.names[0]
        entity = f"{url}/entities/{first.name}/key:demo"
        send = f"{entity}/commands/{quote(command, safe='')}"
        lines += [
            "",
            f"Try it (entity types: {', '.join(entity_type.name for entity_type in app)}):",
            f"  curl -X POST {shlex.quote(send)} -H 'Content-Type: application/json' -d '{{}}'",
            f"  curl {shlex.quote(entity)}",
            f"  curl {shlex.quote(entity + '/history')}",
            f"  pachyderm call {first.name} demo {shlex.quote(command)} --key --data '{{}}'"
            f" --gateway {url}",
        ]
    return "\n".join([*lines, "", "Ctrl+C stops it."])
