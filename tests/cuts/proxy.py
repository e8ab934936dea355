"""A TCP proxy under a test's control: it forwards a free loopback port to a server
(the machine's PostgreSQL or RabbitMQ) and cuts the way between them on demand.

- :meth:`Proxy.cut` with ``"reset"``: every connection through it is reset (RST to
  both ends, as a firewall rejecting with tcp-reset), and so is every new one, until
  :meth:`Proxy.heal`.
- :meth:`Proxy.cut` with ``"blackhole"``: nothing is forwarded any more, in either
  direction, and nothing is refused: new connections are accepted and hear nothing.
  Both ends see a connection that is up and silent, the nastier case: only their own
  timeouts (a statement timeout, an AMQP heartbeat) tell them. The bytes are held,
  not dropped: on :meth:`Proxy.heal` they flow on, as a healed network's would once
  TCP retransmits, so a connection that outlived the cut is still a sound stream.

Invariant: while not cut, the proxy forwards every byte in order, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Cut = Literal["reset", "blackhole"]

_CHUNK = 65536


class _Pair:
    """One connection through the proxy: the client's end and the server's."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.pumps: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        """Close both ends with an RST rather than a FIN."""
        for pump in self.pumps:
            pump.cancel()
        for writer in (self.client, self.server):
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # Linger on, for no time: close() then sends an RST and drops what is unsent.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Proxy:
    """Forwards ``127.0.0.1:<port>`` to ``host:target_port`` until cut; use as an async
    context manager (it listens on entry, resets every connection on exit)."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0  # once listening
        self.cut_as: Cut | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._pairs: set[_Pair] = set()
        self._server: asyncio.Server | None = None

    @classmethod
    def to(cls, url: str) -> Proxy:
        """A proxy to the server of ``url`` (a PostgreSQL DSN or an AMQP URL)."""
        parts = urlsplit(url)
        assert parts.hostname is not None, url
        assert parts.port is not None, url
        return cls(parts.hostname, parts.port)

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
        for pair in tuple(self._pairs):
            pair.reset()
        self._pairs.clear()

    @property
    def connections(self) -> int:
        """Connections through the proxy now."""
        return len(self._pairs)

    def cut(self, how: Cut) -> None:
        """Cut the way to the server (see the module's docstring for the two ways)."""
        self.cut_as = how
        self._flowing.clear()
        if how == "reset":
            for pair in tuple(self._pairs):
                pair.reset()
            self._pairs.clear()

    def heal(self) -> None:
        """Forward again: held bytes flow on, new connections reach the server."""
        self.cut_as = None
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        if self.cut_as == "reset":
            _reset(client)
            return
        try:
            upstream, server = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            _reset(client)
            return
        pair = _Pair(client, server)
        self._pairs.add(pair)
        pair.pumps = [
            asyncio.create_task(self._pump(reader, server)),
            asyncio.create_task(self._pump(upstream, client)),
        ]
        await asyncio.gather(*pair.pumps, return_exceptions=True)
        self._pairs.discard(pair)
        for writer in (client, server):
            writer.close()

    async def _pump(self, source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        """Copy ``source`` to ``target`` while flowing; held (not dropped) while cut."""
        try:
            while True:
                await self._flowing.wait()
                data = await source.read(_CHUNK)
                await self._flowing.wait()  # read just before a blackhole: held, not sent
                if not data:
                    target.write_eof()
                    return
                target.write(data)
                await target.drain()
        except (ConnectionError, OSError):
            # One end went: the other goes with it.
            _reset(target)
