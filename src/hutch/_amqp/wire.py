"""Properties as they come back from the wire, for the in-process memory broker.

The memory broker (:mod:`hutch._memory`) imports no pika; it stores what a consumer of
RabbitMQ would receive. This encodes a publish's pika properties as pika would send them
and decodes them as pika would on the consumer's side (with hutch's guarded decoder), so
a header value arrives with the same type on both backends (``b"x"`` stays bytes, a
``datetime`` loses its sub-second part, a value AMQP has no type for fails the publish).
"""

from __future__ import annotations

import struct
from typing import Any

import pika

from hutch._amqp.properties import _GuardedBasicProperties

__all__ = ["WIRE_ERRORS", "wire_copy"]

#: What pika's encoding (and so :func:`wire_copy`) raises for a value AMQP cannot carry
#: (the publish then fails); ``struct.error`` for an int that fits no AMQP integer.
WIRE_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPError,
    TypeError,
    ValueError,
    OverflowError,
    struct.error,
)


def wire_copy(properties: Any) -> Any:
    """The properties a consumer would decode after ``properties`` crossed the wire.

    Args:
        properties: pika ``BasicProperties`` of an outgoing message.

    Returns:
        A new ``BasicProperties`` decoded from the encoded bytes.

    Raises:
        pika.exceptions.AMQPError: A value AMQP has no type for (see :data:`WIRE_ERRORS`).
    """
    encoded = b"".join(properties.encode())
    return _GuardedBasicProperties().decode(encoded)
