"""Attribute names: OpenTelemetry's semantic conventions (messaging, RabbitMQ, database)
and Pachyderm's own, spelled out once."""

from __future__ import annotations

from typing import Final

# Messaging (https://opentelemetry.io/docs/specs/semconv/messaging/rabbitmq/).
MESSAGING_SYSTEM: Final = "messaging.system"
RABBITMQ: Final = "rabbitmq"
DESTINATION: Final = "messaging.destination.name"  # the exchange, for RabbitMQ
PARTITION: Final = "messaging.destination.partition.id"
ROUTING_KEY: Final = "messaging.rabbitmq.destination.routing_key"
MESSAGE_ID: Final = "messaging.message.id"
OPERATION_NAME: Final = "messaging.operation.name"
OPERATION_TYPE: Final = "messaging.operation.type"
BATCH_SIZE: Final = "messaging.batch.message_count"
CONSUMER_GROUP: Final = "messaging.consumer.group.name"
# Operation names (AMQP's basic.publish, and processing); a publish is of type "send".
PUBLISH: Final = "publish"
PROCESS: Final = "process"
SEND: Final = "send"

# Databases (https://opentelemetry.io/docs/specs/semconv/database/).
DB_SYSTEM: Final = "db.system.name"
ERROR_TYPE: Final = "error.type"

# Pachyderm's own. Entity ids go in attributes, never in span names.
ENTITY_TYPE: Final = "pachyderm.entity.type"
ENTITY_ID: Final = "pachyderm.entity.id"
OUTCOME: Final = "pachyderm.outcome"
ENTITY_COUNT: Final = "pachyderm.entity.count"
CHANGE_COUNT: Final = "pachyderm.change.count"
