"""Listing the entities of a type over HTTP: keyset pages by id or by last change, each
with the link to the next, stable while entities are added."""

from __future__ import annotations

from typing import Any

import httpx

from pachyderm import Ref

from .serving import CALLER, JSON, problem


async def increment(http: httpx.AsyncClient, key: str) -> None:
    response = await http.post(
        f"/entities/counter/key:{key}/commands/Increment", json={}, headers=CALLER | JSON
    )
    assert response.status_code == 200, response.text


async def pages(http: httpx.AsyncClient, first: str) -> list[dict[str, Any]]:
    """Every page from ``first`` on, following the next links."""
    found, link = [], first
    while link:
        response = await http.get(link, headers=CALLER)
        assert response.status_code == 200, response.text
        page = response.json()
        found.append(page)
        assert response.headers.get("Link") == (
            f'<{page["next"]}>; rel="next"' if page["next"] else None
        )
        link = page["next"]
    return found


async def test_a_type_is_listed_by_id_page_by_page(either: httpx.AsyncClient) -> None:
    keys = [f"k{n}" for n in range(5)]
    for key in keys:
        await increment(either, key)
    await increment(either, "k0")
    listed = await pages(either, "/entities/counter?limit=2")
    assert [len(page["entities"]) for page in listed] == [2, 2, 1]
    entities = [entity for page in listed for entity in page["entities"]]
    ids = sorted(str(Ref.from_key("counter", key).id) for key in keys)
    assert [entity["id"] for entity in entities] == ids
    versions = {entity["id"]: entity["version"] for entity in entities}
    assert versions[str(Ref.from_key("counter", "k0").id)] == 2
    assert all(page["type"] == "counter" for page in listed)


async def test_by_last_change_the_latest_comes_last(http: httpx.AsyncClient) -> None:
    for key in ("a", "b", "c"):
        await increment(http, key)
    await increment(http, "a")
    listed = await pages(http, "/entities/counter?order=change&limit=1")
    entities = [entity for page in listed for entity in page["entities"]]
    assert [entity["id"] for entity in entities] == [
        str(Ref.from_key("counter", key).id) for key in ("b", "c", "a")
    ]
    times = [entity["updated_at"] for entity in entities]
    assert times == sorted(times)


async def test_a_next_link_holds_while_entities_are_added(http: httpx.AsyncClient) -> None:
    for n in range(4):
        await increment(http, f"old{n}")
    first = (await http.get("/entities/counter?limit=2", headers=CALLER)).json()
    for n in range(10):
        await increment(http, f"new{n}")
    rest = await pages(http, first["next"])
    seen = [e["id"] for page in [first, *rest] for e in page["entities"]]
    assert len(seen) == len(set(seen))
    cursor = first["entities"][-1]["id"]
    old = {str(Ref.from_key("counter", f"old{n}").id) for n in range(4)}
    new = {str(Ref.from_key("counter", f"new{n}").id) for n in range(10)}
    assert set(seen) == old | {i for i in new if i > cursor}


async def test_types_are_kept_apart_and_bad_cursors_refused(http: httpx.AsyncClient) -> None:
    await increment(http, "only")
    accounts = (await http.get("/entities/account", headers=CALLER)).json()
    assert accounts == {"type": "account", "entities": [], "next": None}
    problem(await http.get("/entities/counter?after=x", headers=CALLER), 400)
    problem(await http.get("/entities/counter?order=change&after=x", headers=CALLER), 400)
    problem(await http.get("/entities/counter?order=size", headers=CALLER), 400)
    problem(await http.get("/entities/counter?limit=1001", headers=CALLER), 400)
    problem(await http.get("/entities/nope", headers=CALLER), 404)
