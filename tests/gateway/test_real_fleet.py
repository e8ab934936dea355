"""The gateway over real HTTP in front of two worker processes on the machine's RabbitMQ
and PostgreSQL: every status it answers, idempotent retries and authentication.

The gateway is built as ``pachyderm gateway`` builds it, without the app: unknown
names and invalid fields travel to the workers, which answer them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from pachyderm import Client, Ref
from pachyderm.gateway import GatewayOptions, create_app
from pachyderm.store import PostgresEventStore, open_store
from pachyderm.testing import process_fleet
from pachyderm.transport import RabbitMQTransport, Topology

from .serving import CALLER, READER, TOKENS, Messages, problem, serving

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 2
MAX_BODY = 4096

# One fleet for the module: starting worker processes is what takes time.
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest.fixture(scope="module")
def fleet_namespace() -> str:
    """The module's own namespace (the shared ``namespace`` fixture is per test)."""
    return f"pachyderm_test_{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet_ready(
    tmp_path_factory: pytest.TempPathFactory,
    fleet_namespace: str,
    postgres_dsn: str,
    rabbitmq_url: str,
) -> AsyncIterator[None]:
    """Two worker processes serving ``tests.gateway.fleet_app:app``, every partition owned."""
    folder = tmp_path_factory.mktemp("fleet")
    app = "tests.gateway.fleet_app:app"
    async with process_fleet(
        folder,
        fleet_namespace,
        postgres_dsn,
        rabbitmq_url,
        app=app,
        partitions=PARTITIONS,
        cwd=ROOT,
    ) as fleet:
        fleet.start_worker("w1")
        fleet.start_worker("w2")
        await fleet.balanced()
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(
    fleet_ready: None, fleet_namespace: str, postgres_dsn: str, rabbitmq_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The fleet's gateway, as ``pachyderm gateway`` runs it, called with the caller's token."""
    transport = RabbitMQTransport(
        rabbitmq_url, Topology(fleet_namespace, PARTITIONS), connection_name="test-gateway"
    )
    await transport.start()
    store = await open_store(postgres_dsn, namespace=fleet_namespace)
    try:
        client = Client(None, transport, timeout=20)
        await client.start()
        options = GatewayOptions(tokens=TOKENS, max_body=MAX_BODY)
        asgi = create_app(client, store, options)
        async with serving(asgi, headers=CALLER, timeout=30) as started:
            yield started
    finally:
        await store.close()
        await transport.close()


# Nothing listens on the discard port: every connection attempt is refused at once.
UNREACHABLE_DATABASE = "postgresql://pachyderm@127.0.0.1:9/pachyderm"


@pytest_asyncio.fixture(loop_scope="module")
async def deserted(rabbitmq_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, RabbitMQTransport]]:
    """A gateway of a namespace no worker serves, reading histories from a database that
    cannot be reached, waiting half a second for replies; and its transport, to take away."""
    namespace = f"pachyderm_test_{uuid.uuid4().hex[:12]}"
    transport = RabbitMQTransport(rabbitmq_url, Topology(namespace, PARTITIONS))
    await transport.start()
    # min_size 0: the pool opens without connecting; each read then fails to connect.
    store = await PostgresEventStore.connect(UNREACHABLE_DATABASE, schema=namespace, min_size=0)
    try:
        client = Client(None, transport, timeout=0.5)
        await client.start()
        asgi = create_app(client, store, GatewayOptions(tokens=TOKENS))
        async with serving(asgi, headers=CALLER) as started:
            yield started, transport
    finally:
        await store.close()
        await transport.delete_topology()  # and closes it, unless the test did


async def command(
    http: httpx.AsyncClient, path: str, name: str, fields: object, **headers: str
) -> httpx.Response:
    return await http.post(f"{path}/commands/{name}", json=fields, headers=headers)


async def test_commands_state_queries_and_history_answer_200(http: httpx.AsyncClient) -> None:
    bob = "/entities/account/key:bob"
    opened = await command(http, bob, "Open", {"owner": "B"})
    assert opened.status_code == 200, opened.text
    assert opened.json() == {"version": 1, "reply": {"owner": "B", "balance": 0}}
    state = (await http.get(bob)).json()
    assert (state["version"], state["state"]) == (1, {"owner": "B", "balance": 0})
    [event] = (await http.get(f"{bob}/history")).json()["events"]
    assert (event["name"], event["command_id"]) == (
        "Opened",
        opened.headers["Pachyderm-Command-Id"],
    )
    meter = "/entities/meter/key:m"
    assert (await command(http, meter, "Add", {"amount": 5})).status_code == 200
    exceeds = await http.post(f"{meter}/queries/Exceeds", json={"limit": 3})
    assert exceeds.json() == {"version": 1, "reply": True}


async def test_a_follower_sees_each_event_as_it_commits_and_the_type_is_listed(
    http: httpx.AsyncClient,
) -> None:
    """Following and listing read PostgreSQL while worker processes commit."""
    dana = "/entities/account/key:dana"
    assert (await command(http, dana, "Open", {"owner": "D"})).status_code == 200
    async with http.stream("GET", f"{dana}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        messages = Messages(stream)
        assert [e["name"] for e in await messages.events(1)] == ["Opened"]
        for amount in (10, 20):
            assert (await command(http, dana, "Deposit", {"amount": amount})).status_code == 200
            (event,) = await messages.events(1)
            assert (event["name"], event["data"]) == ("Deposited", {"amount": amount})
    async with http.stream("GET", f"{dana}/events", headers={"Last-Event-ID": "2"}) as stream:
        assert [e["version"] for e in await Messages(stream).events(1)] == [3]
    listed = (await http.get("/entities/account?order=change&limit=1000")).json()
    assert listed["entities"][-1]["id"] == str(Ref.from_key("account", "dana").id)
    assert listed["entities"][-1]["version"] == 3


async def test_authentication_401_403_and_the_right_that_admits(http: httpx.AsyncClient) -> None:
    carol = "/entities/account/key:carol"
    missing = problem(await http.get(carol, headers={"Authorization": ""}), 401)
    assert "bearer token" in missing["detail"]
    unknown = await http.get(carol, headers={"Authorization": "Bearer guessed"})
    problem(unknown, 401)
    assert 'error="invalid_token"' in unknown.headers["WWW-Authenticate"]
    lacking = await command(http, carol, "Open", {"owner": "C"}, **READER)
    assert "'call'" in problem(lacking, 403)["detail"]
    assert (await http.get(carol, headers=READER)).status_code == 200  # read is the reader's
    assert (await command(http, carol, "Open", {"owner": "C"})).status_code == 200


async def test_invalid_input_400_unknown_names_404_and_wrong_method_405(
    http: httpx.AsyncClient,
) -> None:
    problem(await http.get("/entities/account/not-a-uuid"), 400)
    bad_key = await command(http, "/entities/account/key:d", "Open", {}, **{"Idempotency-Key": ""})
    problem(bad_key, 400)
    not_an_object = await http.post("/entities/account/key:d/commands/Open", json=[1])
    problem(not_an_object, 400)
    # Without the app at the gateway, the workers answer unknown names.
    problem(await command(http, "/entities/nothing/key:d", "Open", {}), 404)
    problem(await command(http, "/entities/account/key:d", "Close", {}), 404)
    problem(await http.put("/entities/account/key:d/commands/Open", json={}), 405)


async def test_rejection_409_with_the_entitys_reason(http: httpx.AsyncClient) -> None:
    dave = "/entities/account/key:dave"
    assert (await command(http, dave, "Open", {"owner": "D"})).status_code == 200
    rejected = problem(await command(http, dave, "Open", {"owner": "D"}), 409)
    assert (rejected["reason"], rejected["rejection_detail"]) == ("already_open", None)


async def test_body_too_large_413_not_json_415_and_field_problems_422(
    http: httpx.AsyncClient,
) -> None:
    path = "/entities/account/key:erin/commands/Open"
    problem(await http.post(path, json={"owner": "E" * MAX_BODY}), 413)
    problem(
        await http.post(path, content=b'{"owner": "E"}', headers={"Content-Type": "text/plain"}),
        415,
    )
    invalid = problem(await http.post(path, json={"owner": 7, "extra": 1}), 422)
    assert invalid["problems"], invalid


async def test_an_entity_that_raises_is_500_without_its_secrets(http: httpx.AsyncClient) -> None:
    document = problem(await command(http, "/entities/fragile/key:f", "Explode", {}), 500)
    assert "secret" not in str(document)


async def test_a_retry_with_the_same_key_gets_the_same_answer_and_one_event(
    http: httpx.AsyncClient,
) -> None:
    frank = "/entities/account/key:frank"
    assert (await command(http, frank, "Open", {"owner": "F"})).status_code == 200
    key = {"Idempotency-Key": "deposit-frank"}
    first, retried = [await command(http, frank, "Deposit", {"amount": 70}, **key) for _ in "12"]
    assert first.json() == retried.json() == {"version": 2, "reply": {"owner": "F", "balance": 70}}
    assert first.headers["Pachyderm-Command-Id"] == retried.headers["Pachyderm-Command-Id"]
    events = (await http.get(f"{frank}/history")).json()["events"]
    assert [(e["name"], e["command_id"]) for e in events[1:]] == [("Deposited", "deposit-frank")]


async def test_a_retried_rejection_stays_rejected_after_the_state_changed(
    http: httpx.AsyncClient,
) -> None:
    gina = "/entities/account/key:gina"
    assert (await command(http, gina, "Open", {"owner": "G"})).status_code == 200
    key = {"Idempotency-Key": "withdraw-gina"}
    first = problem(await command(http, gina, "Withdraw", {"amount": 50}, **key), 409)
    assert (first["reason"], first["rejection_detail"]) == ("insufficient_funds", {"balance": 0})
    assert (await command(http, gina, "Deposit", {"amount": 100})).status_code == 200
    # Enough money now; the command with that key was decided: rejected.
    retried = problem(await command(http, gina, "Withdraw", {"amount": 50}, **key), 409)
    assert retried == first
    assert (await http.get(gina)).json()["state"]["balance"] == 100


async def test_no_reply_in_time_504_then_broker_and_database_unavailable_503(
    deserted: tuple[httpx.AsyncClient, RabbitMQTransport],
) -> None:
    http, transport = deserted
    hal = "/entities/account/key:hal"
    timed_out = await command(http, hal, "Open", {"owner": "H"}, **{"Idempotency-Key": "open-hal"})
    assert "Idempotency-Key" in problem(timed_out, 504)["detail"]
    assert timed_out.headers["Pachyderm-Command-Id"] == "open-hal"
    unreadable = problem(await http.get(f"{hal}/history"), 503)
    assert unreadable["detail"] == "the event store is unavailable; retry later"
    await transport.close()
    problem(await command(http, hal, "Open", {"owner": "H"}), 503)
    readiness = await http.get("/readyz")
    assert readiness.status_code == 503
    assert set(readiness.json()["checks"]) == {"broker", "database"}
    assert "ok" not in readiness.json()["checks"].values()
