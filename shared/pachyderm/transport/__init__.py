"""Transports: the port, RabbitMQ (production) and in-process (embedded, tests).

:class:`RabbitMQTransport` is imported on first use, and aio-pika with it:
the embedded mode (in-process) never loads that library.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ._in_process import InProcessTransport
from ._message import Delivery, Message
from ._port import Inbox, MessageHandler, RoutedAgain, Transport
from ._topology import DEFAULT_PARTITIONS, Topology

if TYPE_CHECKING:
    from ._broker_addresses import connect_to_broker
    from ._rabbitmq import RabbitMQTransport
else:
    # Hidden from type checkers, which then still report a misspelt name.
    __getattr__ = lazy_names(
        __name__,
        {"RabbitMQTransport": "._rabbitmq", "connect_to_broker": "._broker_addresses"},
    )

__all__ = [
    "DEFAULT_PARTITIONS",
    "Delivery",
    "InProcessTransport",
    "Inbox",
    "Message",
    "MessageHandler",
    "RabbitMQTransport",
    "RoutedAgain",
    "Topology",
    "Transport",
    "connect_to_broker",
]
