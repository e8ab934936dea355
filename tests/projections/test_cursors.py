"""The cursor store's contract, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Backend


async def positions(backend: Backend, name: str) -> dict[int, int]:
    return {c.partition: c.position for c in await backend.cursors.cursors(name)}


async def test_ensure_creates_missing_cursors_at_zero_and_keeps_the_others(
    backend: Backend,
) -> None:
    cursors = backend.cursors
    await cursors.ensure("p", 2)
    assert await positions(backend, "p") == {0: 0, 1: 0}
    assert await cursors.advance("p", 1, 0, 7)
    await cursors.ensure("p", 3)
    assert await positions(backend, "p") == {0: 0, 1: 7, 2: 0}
    await cursors.ensure("q", 1)
    assert [(c.projection, c.partition) for c in await cursors.cursors()] == [
        ("p", 0),
        ("p", 1),
        ("p", 2),
        ("q", 0),
    ]


async def test_advance_is_a_compare_and_set(backend: Backend) -> None:
    cursors = backend.cursors
    await cursors.ensure("p", 1)
    assert await cursors.advance("p", 0, 0, 5)
    # A second runner that read from 0 too writes nothing.
    assert not await cursors.advance("p", 0, 0, 3)
    assert await positions(backend, "p") == {0: 5}
    assert not await cursors.advance("absent", 0, 0, 1)


async def test_paused_and_rebuilding_cursors_do_not_advance(backend: Backend) -> None:
    cursors = backend.cursors
    await cursors.ensure("p", 2)
    assert await cursors.set_paused("p", True) == 2
    assert all(c.paused for c in await cursors.cursors("p"))
    assert not await cursors.advance("p", 0, 0, 1)
    assert await cursors.set_paused("p", False) == 2
    assert await cursors.advance("p", 0, 0, 4)
    assert await cursors.request_rebuild("p") == 2
    assert not await cursors.advance("p", 0, 4, 5)
    assert await cursors.set_paused("absent", True) == 0


async def test_rebuild_clears_once_and_resets_every_cursor(backend: Backend) -> None:
    cursors = backend.cursors
    cleared: list[Any] = []

    async def clear(connection: Any) -> None:
        cleared.append(connection)

    await cursors.ensure("p", 2)
    await cursors.advance("p", 0, 0, 4)
    await cursors.advance("p", 1, 0, 9)
    assert not await cursors.rebuild("p", clear)  # not asked for
    assert cleared == []
    await cursors.request_rebuild("p")
    assert await cursors.rebuild("p", clear)
    assert not await cursors.rebuild("p", clear)  # done: the flag is gone
    assert len(cleared) == 1
    assert await positions(backend, "p") == {0: 0, 1: 0}
    assert not any(c.rebuilding for c in await cursors.cursors("p"))


@pytest.mark.postgres
async def test_a_failing_clear_resets_nothing(postgres: Backend) -> None:
    cursors = postgres.cursors

    async def clear(connection: Any) -> None:
        raise RuntimeError("cannot")

    await cursors.ensure("p", 1)
    await cursors.advance("p", 0, 0, 4)
    await cursors.request_rebuild("p")
    with pytest.raises(RuntimeError):
        await cursors.rebuild("p", clear)
    [cursor] = await cursors.cursors("p")
    assert (cursor.position, cursor.rebuilding) == (4, True)
