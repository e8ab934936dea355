"""``pachyderm call TYPE ID COMMAND --data JSON``: one command from the shell."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._client import Client
from .._errors import InvalidInputError, RejectedError
from .._reference import Ref
from .._settings import Settings
from .._wire import COMMAND, QUERY
from ._runtime import broker, worker_id


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


async def call(settings: Settings, arguments: argparse.Namespace) -> int:
    ref = reference(arguments)
    kind = QUERY if arguments.query else COMMAND
    async with broker(settings, f"call-{worker_id(settings)}") as transport:
        client = Client(None, transport, timeout=settings.call_timeout)
        await client.start()
        try:
            version, reply = await client.call_named(
                ref,
                arguments.command or "",
                _data(arguments.data),
                kind=kind,
                command_id=arguments.command_id,
            )
        except RejectedError as rejection:
            print(json.dumps({"rejected": rejection.reason, "detail": rejection.detail}))
            return 2
    print(json.dumps({"version": version, "reply": reply}, ensure_ascii=False))
    return 0
