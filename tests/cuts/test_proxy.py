"""The cut tests' proxy, against an echo server of the test's own: it forwards, resets,
holds bytes through a blackhole and lets them flow on when healed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from .proxy import Proxy

pytestmark = pytest.mark.cuts


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with Proxy("127.0.0.1", port) as running:
        yield running
    server.close()


async def _connect(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _echoes(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, within: float = 2.0
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), within)


def test_the_url_names_the_proxy_and_keeps_the_rest() -> None:
    proxy = Proxy.to("amqp://guest:secret@127.0.0.1:5672/vhost?heartbeat=2")
    proxy.port = 40000
    assert (proxy.host, proxy.target_port) == ("127.0.0.1", 5672)
    assert proxy.url("amqp://guest:secret@127.0.0.1:5672/vhost?heartbeat=2") == (
        "amqp://guest:secret@127.0.0.1:40000/vhost?heartbeat=2"
    )
    assert proxy.url("postgresql://127.0.0.1:5432/test") == "postgresql://127.0.0.1:40000/test"


async def test_it_forwards_until_a_reset_cut_resets_old_and_new_connections(proxy: Proxy) -> None:
    reader, writer = await _connect(proxy)
    assert await _echoes(reader, writer, b"hello") == b"hello"
    assert proxy.connections == 1

    proxy.cut("reset")
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await _echoes(reader, writer, b"lost")
    reader, writer = await _connect(proxy)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await _echoes(reader, writer, b"refused")

    proxy.heal()
    reader, writer = await _connect(proxy)
    assert await _echoes(reader, writer, b"again") == b"again"
    writer.close()


async def test_a_blackhole_holds_bytes_silently_until_healed(proxy: Proxy) -> None:
    reader, writer = await _connect(proxy)
    assert await _echoes(reader, writer, b"before") == b"before"

    proxy.cut("blackhole")
    with pytest.raises(TimeoutError):
        await _echoes(reader, writer, b"held", within=0.3)
    fresh_reader, fresh_writer = await _connect(proxy)  # accepted, and silent
    with pytest.raises(TimeoutError):
        await _echoes(fresh_reader, fresh_writer, b"unheard", within=0.3)

    proxy.heal()
    # Nothing was dropped: the held bytes arrive, in order, before the next ones.
    assert await asyncio.wait_for(reader.readexactly(4), 2.0) == b"held"
    assert await _echoes(reader, writer, b"after") == b"after"
    assert await asyncio.wait_for(fresh_reader.readexactly(7), 2.0) == b"unheard"
    for opened in (writer, fresh_writer):
        opened.close()
