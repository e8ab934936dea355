"""Commands, state, queries and history through the gateway, over HTTP, against the
embedded fleet: the answers and every status the gateway gives."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from examples import counter
from pachyderm import Client, Ref, StoreUnavailableError
from pachyderm._embedded import EmbeddedFleet
from pachyderm.gateway import GatewayOptions, create_app
from pachyderm.store import RecordedEvent, SqliteEventStore
from pachyderm.transport import InProcessTransport, Topology

from .serving import CALLER, JSON, problem, serving

HEADERS = CALLER | JSON
COUNTER = "/entities/counter/key:c"
ALICE = "/entities/account/key:alice"
METER = "/entities/meter/key:m"


async def send(
    http: httpx.AsyncClient, entity: str, command: str, body: object = None, **headers: str
) -> httpx.Response:
    content = httpx.Request("POST", "/", json={} if body is None else body).content
    return await http.post(
        f"{entity}/commands/{command}", content=content, headers=HEADERS | headers
    )


async def test_a_command_answers_version_and_reply(http: httpx.AsyncClient) -> None:
    first = await send(http, COUNTER, "Increment", {"amount": 2})
    second = await send(http, COUNTER, "Increment")
    assert (first.status_code, first.json()) == (200, {"version": 1, "reply": {"count": 2}})
    assert second.json() == {"version": 2, "reply": {"count": 3}}
    assert uuid.UUID(first.headers["Pachyderm-Command-Id"])
    assert first.headers["Pachyderm-Command-Id"] != second.headers["Pachyderm-Command-Id"]


async def test_state_by_natural_key_or_uuid(http: httpx.AsyncClient) -> None:
    await send(http, COUNTER, "Increment", {"amount": 4})
    ref = counter.Counter.ref("c")
    by_key = await http.get(COUNTER, headers=CALLER)
    by_id = await http.get(f"/entities/counter/{ref.id}", headers=CALLER)
    expected = {"type": "counter", "id": str(ref.id), "version": 1, "state": {"count": 4}}
    assert by_key.json() == by_id.json() == expected


async def test_a_never_written_entity_is_at_version_0(http: httpx.AsyncClient) -> None:
    response = await http.get("/entities/counter/key:new", headers=CALLER)
    assert response.json()["version"] == 0
    assert response.json()["state"] == {"count": 0}


async def test_a_retry_with_the_same_idempotency_key_applies_once(
    http: httpx.AsyncClient, fleet: EmbeddedFleet
) -> None:
    replies = [
        await send(http, COUNTER, "Increment", {"amount": 5}, **{"Idempotency-Key": key})
        for key in ("order-17", "order-17", '"order-17"')  # bare, again, and quoted (RFC 8941)
    ]
    assert [r.json() for r in replies] == [{"version": 1, "reply": {"count": 5}}] * 3
    assert {r.headers["Pachyderm-Command-Id"] for r in replies} == {"order-17"}
    history = await fleet.store.history(counter.Counter.ref("c").id)
    assert [(e.version, e.command_id) for e in history] == [(1, "order-17")]


async def test_a_retry_gets_the_stored_reply_even_where_deciding_again_would_reject(
    http: httpx.AsyncClient,
) -> None:
    key = {"Idempotency-Key": "open-alice"}
    first = await send(http, ALICE, "Open", {"owner": "Alice"}, **key)
    retried = await send(http, ALICE, "Open", {"owner": "Alice"}, **key)
    assert retried.json() == first.json()


async def test_an_idempotency_key_must_be_short_printable_ascii(
    http: httpx.AsyncClient,
) -> None:
    headers = {name.encode(): value.encode() for name, value in HEADERS.items()}
    url = f"{COUNTER}/commands/Increment"
    for key in (b"", b"x" * 201, b"tab\there", "caf\u00e9".encode("latin-1")):
        sent = headers | {b"Idempotency-Key": key}
        response = await http.post(url, content=b"{}", headers=sent)
        assert "Idempotency-Key" in problem(response, 400)["detail"], key


async def test_history_pages_oldest_first_with_a_link_to_the_next(
    http: httpx.AsyncClient,
) -> None:
    for amount in range(1, 6):
        await send(http, COUNTER, "Increment", {"amount": amount})
    seen: list[tuple[int, int]] = []
    url: str | None = f"{COUNTER}/history?limit=2"
    pages = 0
    while url is not None:
        page = (await http.get(url, headers=CALLER)).json()
        seen += [(event["version"], event["data"]["amount"]) for event in page["events"]]
        url, pages = page["next"], pages + 1
    assert seen == [(v, v) for v in range(1, 6)]
    assert pages == 3
    response = await http.get(f"{COUNTER}/history?from=2&limit=2", headers=CALLER)
    ref = counter.Counter.ref("c")
    expected_next = f"/entities/counter/{ref.id}/history?from=4&limit=2"
    assert response.json()["next"] == expected_next
    assert response.headers["Link"] == f'<{expected_next}>; rel="next"'
    event = response.json()["events"][0]
    assert event["name"] == "Increased"
    assert uuid.UUID(event["command_id"])
    assert event["recorded_at"].endswith("+00:00")
    assert event["schema_version"] == 1


async def test_the_last_full_page_has_no_next(http: httpx.AsyncClient) -> None:
    for _ in range(2):
        await send(http, COUNTER, "Increment")
    page = (await http.get(f"{COUNTER}/history?limit=2", headers=CALLER)).json()
    assert (len(page["events"]), page["next"]) == (2, None)


async def test_history_paging_is_checked(http: httpx.AsyncClient) -> None:
    for query in ("from=0", "limit=0", "limit=1001", "limit=x", "from=1e3"):
        problem(await http.get(f"{COUNTER}/history?{query}", headers=CALLER), 400)


async def test_history_of_another_types_id_is_not_found(http: httpx.AsyncClient) -> None:
    await send(http, COUNTER, "Increment")
    ref = counter.Counter.ref("c")
    response = await http.get(f"/entities/account/{ref.id}/history", headers=CALLER)
    assert "is a 'counter'" in problem(response, 404)["detail"]


async def test_a_command_to_another_types_id_is_not_found(http: httpx.AsyncClient) -> None:
    await send(http, ALICE, "Open", {"owner": "Alice"})
    alice = Ref.from_key("account", "alice")
    response = await send(http, f"/entities/counter/{alice.id}", "Increment")
    assert "is a 'account', not a 'counter'" in problem(response, 404)["detail"]


async def test_any_spelling_of_a_uuid_in_the_path_reaches_the_one_entity(
    http: httpx.AsyncClient,
) -> None:
    # The workers take only the canonical spelling: the gateway must re-render it.
    ref = counter.Counter.ref("c")
    spellings = [str(ref.id).upper(), ref.id.hex, f"{{{ref.id}}}", f"urn:uuid:{ref.id}"]
    replies = [await send(http, f"/entities/counter/{text}", "Increment") for text in spellings]
    assert [(r.status_code, r.json()["version"]) for r in replies] == [
        (200, 1),
        (200, 2),
        (200, 3),
        (200, 4),
    ]


async def test_a_rejection_is_409_with_the_entitys_reason_and_detail(
    http: httpx.AsyncClient,
) -> None:
    await send(http, ALICE, "Open", {"owner": "Alice"})
    document = problem(await send(http, ALICE, "Withdraw", {"amount": 5}), 409)
    assert document["type"] == "urn:pachyderm:problem:rejected"
    assert (document["reason"], document["rejection_detail"]) == (
        "insufficient_funds",
        {"balance": 0},
    )


async def test_invalid_fields_are_422_naming_each_field(http: httpx.AsyncClient) -> None:
    document = problem(await send(http, ALICE, "Deposit", {"amount": -1, "extra": 1}), 422)
    assert document["problems"] == [
        {"location": "amount", "problem": "Input should be greater than 0"},
        {"location": "extra", "problem": "Unknown field; the fields of Deposit are: amount"},
    ]


async def test_a_misspelled_field_is_422_naming_it_and_writes_nothing(
    either: httpx.AsyncClient, fleet: EmbeddedFleet
) -> None:
    # Read tolerantly, it would increment by the default 1.
    document = problem(await send(either, COUNTER, "Increment", {"amout": 50}), 422)
    assert [p["location"] for p in document["problems"]] == ["amout"]
    assert "Increment" in document["detail"]
    assert await fleet.store.history(counter.Counter.ref("c").id) == []


async def test_unknown_names_are_404(http: httpx.AsyncClient) -> None:
    for path, found in (
        ("/entities/nope/key:a/commands/Open", "unknown entity type 'nope'"),
        ("/entities/Not_A_Type/key:a/commands/Open", "unknown entity type 'Not_A_Type'"),
        ("/entities/account/key:a/commands/Fly", "unknown command 'Fly'"),
        ("/entities/account/key:a/queries/Statement", "unknown query 'Statement'"),
        ("/nowhere", "Not Found"),
        # Not redirected to the path without the slash: found by hypothesis.
        ("/entities/account/key:a/queries/", "Not Found"),
    ):
        response = await http.post(path, json={}, headers=CALLER)
        assert found in problem(response, 404)["detail"], path


async def test_a_body_must_be_a_json_object(http: httpx.AsyncClient) -> None:
    url = f"{COUNTER}/commands/Increment"
    for body, found in (
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b"", "malformed JSON"),
    ):
        response = await http.post(url, content=body, headers=HEADERS)
        assert found in problem(response, 400)["detail"], body


async def test_a_bad_id_is_400(http: httpx.AsyncClient) -> None:
    for entity, found in (
        ("/entities/counter/12345", "must be a UUID"),
        ("/entities/counter/key:", "must not be empty"),
    ):
        assert found in problem(await send(http, entity, "Increment"), 400)["detail"], entity


async def test_a_body_must_be_sent_as_json(http: httpx.AsyncClient) -> None:
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = CALLER | ({"Content-Type": content_type} if content_type else {})
        response = await http.post(f"{COUNTER}/commands/Increment", content=b"{}", headers=headers)
        problem(response, 415)


async def test_the_wrong_method_is_405(http: httpx.AsyncClient) -> None:
    response = await http.delete(COUNTER, headers=CALLER)
    assert problem(response, 405)
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD"}


async def test_a_body_over_the_limit_is_413_declared_or_streamed(fleet: EmbeddedFleet) -> None:
    asgi = create_app(fleet.client, fleet.store, GatewayOptions(tokens=None, max_body=64))
    # Padded with blanks: a command's undeclared fields are refused (422), not ignored.
    fits = b'{"amount": 1' + b" " * 45 + b"}"
    too_big = b'{"amount": 1' + b" " * 55 + b"}"

    async def chunked(body: bytes) -> AsyncIterator[bytes]:
        yield body[:10]
        yield body[10:]

    url = f"{COUNTER}/commands/Increment"
    async with serving(asgi, headers=JSON) as http:
        assert (await http.post(url, content=fits)).status_code == 200
        assert "64 bytes" in problem(await http.post(url, content=too_big), 413)["detail"]
        streamed = await http.post(url, content=chunked(too_big))
        assert "content-length" not in streamed.request.headers
        problem(streamed, 413)
        assert (await http.post(url, content=chunked(fits))).status_code == 200
        # Declared too large: refused at once, before a byte of the body is sent.
        reader, writer = await asyncio.open_connection(http.base_url.host, http.base_url.port)
        try:
            writer.write(
                f"POST {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                "\r\nContent-Length: 1000000\r\n\r\n".encode()
            )
            status_line = await asyncio.wait_for(reader.readline(), 2)
        finally:
            writer.close()
            await writer.wait_closed()
        assert status_line.startswith(b"HTTP/1.1 413 ")


async def test_an_entity_that_raises_is_500_without_its_secrets(http: httpx.AsyncClient) -> None:
    document = problem(await send(http, "/entities/fragile/key:f", "Explode"), 500)
    assert document["type"] == "urn:pachyderm:problem:entity-failed"
    assert "secret" not in str(document)
    assert "Traceback" not in str(document)


async def test_no_reply_in_time_is_504_naming_the_command_to_retry() -> None:
    transport = InProcessTransport(Topology())  # no worker consumes it
    await transport.start()
    client = Client(None, transport, timeout=0.2)
    await client.start()
    asgi = create_app(client, None, GatewayOptions(tokens=None))
    async with serving(asgi, headers=JSON) as http:
        response = await send(http, COUNTER, "Increment", **{"Idempotency-Key": "k-504"})
    document = problem(response, 504)
    assert "k-504" in document["detail"]
    assert response.headers["Pachyderm-Command-Id"] == "k-504"
    await transport.close()


async def test_a_closed_broker_is_503() -> None:
    transport = InProcessTransport(Topology())
    await transport.start()
    client = Client(None, transport)
    await client.start()
    await transport.close()
    asgi = create_app(client, None, GatewayOptions(tokens=None))
    async with serving(asgi, headers=JSON) as http:
        document = problem(await send(http, COUNTER, "Increment"), 503)
        assert document["type"] == "urn:pachyderm:problem:unavailable"
        readiness = await http.get("/readyz")
        assert readiness.status_code == 503
        assert readiness.json()["checks"] == {"broker": "failed: TransportError"}


class UnreachableStore(SqliteEventStore):
    """A store whose database is gone."""

    async def history(
        self, entity_id: uuid.UUID, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        raise StoreUnavailableError("PostgreSQL unavailable: connection refused to db:5432")

    async def versions(self, entity_ids: object) -> dict[uuid.UUID, int]:
        raise StoreUnavailableError("PostgreSQL unavailable: connection refused to db:5432")


async def test_an_unavailable_database_is_503_without_its_address(fleet: EmbeddedFleet) -> None:
    store = await UnreachableStore.open(":memory:")
    asgi = create_app(fleet.client, store, GatewayOptions(tokens=None))
    async with serving(asgi) as http:
        document = problem(await http.get(f"{COUNTER}/history"), 503)
        assert "db:5432" not in str(document)
        readiness = await http.get("/readyz")
        assert readiness.status_code == 503
        checks = {"broker": "ok", "database": "failed: StoreUnavailableError"}
        assert readiness.json()["checks"] == checks
        assert "db:5432" not in readiness.text
    await store.close()


async def test_a_gateway_without_the_app_calls_by_name(bare: httpx.AsyncClient) -> None:
    response = await send(bare, ALICE, "Open", {"owner": "Alice"})
    assert response.json() == {"version": 1, "reply": {"owner": "Alice", "balance": 0}}
    assert problem(await send(bare, ALICE, "Open", {"owner": "Alice"}), 409)["reason"] == (
        "already_open"
    )
    state = await bare.get(ALICE, headers=CALLER)
    assert state.json()["state"] == {"owner": "Alice", "balance": 0}
    history = (await bare.get(f"{ALICE}/history", headers=CALLER)).json()
    assert [e["data"] for e in history["events"]] == [{"owner": "Alice"}]


@pytest.mark.parametrize(
    ("path", "status"),
    [("/entities/nope/key:a/commands/Open", 404), (f"{ALICE}/commands/Open", 422)],
)
async def test_a_gateway_without_the_app_tells_unknown_names_from_bad_fields(
    bare: httpx.AsyncClient, path: str, status: int
) -> None:
    problem(await bare.post(path, json={}, headers=CALLER), status)


async def test_a_named_query_answers_without_writing(
    either: httpx.AsyncClient, fleet: EmbeddedFleet
) -> None:
    await send(either, METER, "Add", {"amount": 3})
    for limit, exceeds in ((2, True), (3, False)):
        url = f"{METER}/queries/Exceeds"
        response = await either.post(url, json={"limit": limit}, headers=CALLER)
        assert response.json() == {"version": 1, "reply": exceeds}
    assert len(await fleet.store.history(Ref.from_key("meter", "m").id)) == 1


async def test_a_querys_fields_are_checked(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{METER}/queries/Exceeds", json={"limit": "x"}, headers=CALLER)
    assert problem(response, 422)["problems"][0]["location"] == "limit"


async def test_a_querys_unknown_fields_are_422_naming_them(either: httpx.AsyncClient) -> None:
    body = {"limit": 2, "limt": 3}
    response = await either.post(f"{METER}/queries/Exceeds", json=body, headers=CALLER)
    assert [p["location"] for p in problem(response, 422)["problems"]] == ["limt"]
