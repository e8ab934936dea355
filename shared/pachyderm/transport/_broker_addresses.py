"""The addresses of a RabbitMQ cluster, and a robust connection to whichever node is up.

``PACHYDERM_AMQP_URL`` names one broker, or the nodes of one cluster separated by
commas (``amqp://u:p@rabbit-1/,amqp://u:p@rabbit-2/,amqp://u:p@rabbit-3/``).

- A process connects to one node, chosen at random so that a fleet's
  connections spread over the cluster; when that node does not answer, it tries
  the next ones in turn and fails only when none answers (then with the last
  node's error).
- Once connected, aio-pika's robust connection reconnects on its own after a
  loss; here every attempt it makes goes to the next address, round the list,
  so a node that is gone costs one attempt (``reconnect_interval``), not all.
- Every address must be a node of the same cluster, with the same user and
  virtual host: the connection options (query parameters) are the first
  address's. One address behaves as ``aio_pika.connect_robust``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from aio_pika import RobustConnection
from aio_pika.abc import UnderlayConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from yarl import URL

from .._errors import TransportError

# A comma starts a new address only before a scheme: a URL's query may hold commas.
_SEPARATOR = re.compile(r"\s*,\s*(?=amqps?://)")


def broker_addresses(setting: str) -> tuple[str, ...]:
    """The addresses in an AMQP URL setting: one URL, or several separated by commas."""
    addresses = tuple(part.strip() for part in _SEPARATOR.split(setting.strip()) if part.strip())
    if not addresses:
        raise TransportError("no RabbitMQ address given (PACHYDERM_AMQP_URL is empty)")
    return addresses


class BrokerConnection(RobustConnection):
    """A robust connection whose every (re)connect attempt goes to the next address.

    aio-pika starts each attempt by dropping the connection's transport and
    then connects to ``self.url``: the address moves on at that moment.
    """

    def __init__(self, addresses: Sequence[str], first: int, **options: Any) -> None:
        # Before the base's __init__, which drops the transport too.
        self._addresses = tuple(URL(address) for address in addresses)
        self._next = first
        self._transport: UnderlayConnection | None = None
        super().__init__(self._addresses[first], **options)
        self._next = first  # the first attempt is still to come

    @property
    def transport(self) -> UnderlayConnection | None:
        return self._transport

    @transport.setter
    def transport(self, transport: UnderlayConnection | None) -> None:
        self._transport = transport
        if transport is None:  # an attempt starts, or the connection closes
            self.url = self._addresses[self._next]
            self._next = (self._next + 1) % len(self._addresses)


async def connect_to_broker(
    setting: str, *, client_properties: dict[str, Any] | None = None
) -> RobustConnection:
    """A robust connection to one of the addresses in ``setting`` (see the module).

    Raises what aio-pika raises for the last address when no node answers.
    """
    addresses = broker_addresses(setting)
    start = random.randrange(len(addresses))
    failure: BaseException | None = None
    for offset in range(len(addresses)):
        first = (start + offset) % len(addresses)
        connection = BrokerConnection(addresses, first, client_properties=client_properties)
        try:
            await connection.connect()
        except CONNECTION_EXCEPTIONS as error:
            await connection.close()
            failure = error
            continue
        return connection
    assert failure is not None  # there is at least one address
    raise failure
