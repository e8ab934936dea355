"""``pachyderm call TYPE ID COMMAND --data JSON``: one command from the shell.

Over AMQP to a fleet, or with ``--gateway URL`` over HTTP through a gateway
(e.g. a running ``pachyderm dev``), with the same output either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .._client import Client
from .._errors import (
    CallTimeoutError,
    HandlerError,
    InvalidInputError,
    PachydermError,
    RejectedError,
    TransportUnavailableError,
    UnknownNameError,
)
from .._reference import Ref
from .._settings import Settings
from .._wire import COMMAND, QUERY
from ._runtime import worker_id

# Exit statuses: 0 applied, 1 an error, 2 a usage mistake (argparse's), 3 rejected.
REJECTED = 3
# The gateway answers 504 once its own call timeout passes; wait longer than that.
_HTTP_MARGIN = 30.0
# What the gateway's error statuses mean as errors, as the AMQP path raises them.
_HTTP_ERRORS: Mapping[int, type[PachydermError]] = {
    400: InvalidInputError,
    404: UnknownNameError,
    413: InvalidInputError,
    415: InvalidInputError,
    422: InvalidInputError,
    500: HandlerError,
    503: TransportUnavailableError,
    504: CallTimeoutError,
}


def _data(text: str | None) -> Any:
    if text is None:
        return {}
    try:
        return json.loads(text)
    except ValueError as error:
        raise InvalidInputError(f"--data is not JSON: {error}") from None


def reference(arguments: argparse.Namespace) -> Ref:
    if arguments.key:
        return Ref.from_key(arguments.type, arguments.id)
    return Ref.parse(arguments.type, arguments.id)


@dataclass(frozen=True, slots=True)
class _Call:
    """One call, from the command line."""

    ref: Ref
    name: str
    data: Any
    kind: str
    command_id: str

    @property
    def reads_state(self) -> bool:
        return self.kind == QUERY and not self.name


async def call_command(settings: Settings, arguments: argparse.Namespace) -> int:
    """Print ``{"version", "reply"}`` (exit 0), or the rejection (exit 3)."""
    kind = QUERY if arguments.query else COMMAND
    if kind == COMMAND and not arguments.command:
        raise InvalidInputError("name the command to send (or pass --query to read the state)")
    one = _Call(
        reference(arguments),
        arguments.command or "",
        _data(arguments.data),
        kind,
        # Chosen here, not downstream, so that a timeout can say what to retry with.
        arguments.command_id or str(uuid.uuid4()),
    )
    gateway = arguments.gateway or settings.gateway_url
    try:
        if gateway:
            timeout = settings.call_timeout + _HTTP_MARGIN
            token = settings.gateway_token.get_secret_value()
            version, reply = await asyncio.to_thread(_over_http, gateway, token, one, timeout)
        else:
            version, reply = await _over_amqp(settings, one)
    except RejectedError as rejection:
        print(json.dumps({"rejected": rejection.reason, "detail": rejection.detail}))
        return REJECTED
    print(json.dumps({"version": version, "reply": reply}, ensure_ascii=False))
    return 0


async def _over_amqp(settings: Settings, one: _Call) -> tuple[int, Any]:
    async with Client.connect(settings, name=f"call-{worker_id(settings)}") as client:
        return await client.request(
            one.ref, one.name, one.data, kind=one.kind, command_id=one.command_id
        )


def _over_http(base_url: str, token: str, one: _Call, timeout: float) -> tuple[int, Any]:
    """The call through a gateway (blocking: run it in a thread)."""
    if urlsplit(base_url).scheme not in {"http", "https"}:
        raise InvalidInputError("--gateway must be an http:// or https:// URL")
    entity = f"{base_url.rstrip('/')}/entities/{one.ref.type}/{one.ref.id}"
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if one.reads_state:
        request = urllib.request.Request(entity, headers=headers)
    else:
        path = "commands" if one.kind == COMMAND else "queries"
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = one.command_id
        url = f"{entity}/{path}/{quote(one.name, safe='')}"
        request = urllib.request.Request(url, json.dumps(one.data).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        raise _error_from(error) from None
    except TimeoutError:
        raise CallTimeoutError(
            f"no answer from the gateway within {timeout}s; the command may still apply:"
            f" retry with --command-id {one.command_id}"
        ) from None
    except OSError as error:
        reason = getattr(error, "reason", error)
        raise TransportUnavailableError(f"cannot reach the gateway: {reason}") from None
    return answer["version"], answer["state" if one.reads_state else "reply"]


def _error_from(error: urllib.error.HTTPError) -> PachydermError:
    """The error the gateway's problem document describes."""
    try:
        problem = json.load(error)
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {"detail": error.reason}
    if error.code == 409:
        return RejectedError(str(problem.get("reason")), problem.get("rejection_detail"))
    detail = f"{problem.get('detail')} (HTTP {error.code})"
    if error.code == 401:
        detail += "; set PACHYDERM_GATEWAY_TOKEN"
    return _HTTP_ERRORS.get(error.code, PachydermError)(detail)
