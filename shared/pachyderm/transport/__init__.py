"""Transports: the port, RabbitMQ (production) and in-process (embedded, tests)."""

from ._in_process import InProcessTransport
from ._message import Delivery, Message
from ._port import Inbox, MessageHandler, RoutedAgain, Transport
from ._rabbitmq import RabbitMQTransport
from ._topology import DEFAULT_PARTITIONS, Topology

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
]
