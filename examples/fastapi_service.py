"""A FastAPI service calling the counter fleet (examples/counter.py) through one client.

The lifespan opens the process's client before the first request and closes it at
shutdown; routes get it as a dependency, which a test replaces with an embedded
fleet's client (tests/examples/test_fastapi_service.py). Against a running fleet of
``examples.counter`` (README: "Running a fleet"), with the same ``PACHYDERM_*``
settings as its workers::

    uvicorn examples.fastapi_service:api
    curl -X POST 'http://127.0.0.1:8000/counters/visits/increment?amount=2'

FastAPI is not a dependency of pachyderm: ``pip install fastapi uvicorn``.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Request

from examples.counter import Counter, CounterState, Increment, app
from pachyderm import CallTimeoutError, Client, load_settings


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    # One broker connection for the whole process, shared by every request.
    async with Client.connect(load_settings(), app) as client:
        api.state.pachyderm = client
        yield


api = FastAPI(title="Counters", lifespan=lifespan)


def pachyderm_client(request: Request) -> Client:
    """The client the lifespan opened."""
    client: Client = request.app.state.pachyderm
    return client


Fleet = Annotated[Client, Depends(pachyderm_client)]


@api.post("/counters/{key}/increment")
async def increment(
    key: str,
    client: Fleet,
    amount: int = 1,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> CounterState:
    """Add ``amount``; answers the counter's new state. A retry with the same
    ``Idempotency-Key`` applies once and answers what the first attempt did."""
    command = Increment(amount=amount)
    try:
        state: CounterState = await client.call(
            Counter.ref(key), command, command_id=idempotency_key
        )
    except CallTimeoutError:
        # Unknown outcome: the increment may still apply.
        raise HTTPException(504, "no answer in time: retry with the same key") from None
    return state


@api.get("/counters/{key}")
async def read(key: str, client: Fleet) -> CounterState:
    """The counter's state (a query: nothing is written)."""
    state: CounterState = await client.query(Counter.ref(key))
    return state
