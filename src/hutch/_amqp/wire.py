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

from hutch._amqp.properties import _SHORT_STRINGS, _GuardedBasicProperties

__all__ = ["WIRE_ERRORS", "plain_copy", "wire_copy"]

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

    Properties the round trip cannot change (:func:`plain_copy`) are copied without it.

    Args:
        properties: pika ``BasicProperties`` of an outgoing message.

    Returns:
        A new ``BasicProperties`` decoded from the encoded bytes.

    Raises:
        pika.exceptions.AMQPError: A value AMQP has no type for (see :data:`WIRE_ERRORS`).
    """
    copy = plain_copy(properties)
    if copy is not None:
        return copy
    encoded = b"".join(properties.encode())
    return _GuardedBasicProperties().decode(encoded)


_INT32 = range(-(2**31), 2**31)  # "I" both ways in every pika (wider ints differ by version)


def plain_copy(properties: Any) -> Any | None:
    """A copy of ``properties`` if the wire would give them back unchanged, else None.

    Unchanged means the same values of the same types. That is so for short strings of
    at most 255 bytes of UTF-8, octets, a timestamp that is an unsigned 64-bit int, and a
    flat headers table of str keys and str, bool, None or 32-bit int values: hutch's own
    headers and most users'. Anything else (bytes, floats, datetimes, decimals, nested
    tables, wider ints, what cannot be encoded) goes through the wire. A property test
    holds this to :func:`wire_copy`'s round trip.
    """
    values = properties.__dict__
    try:
        for name in _SHORT_STRINGS:
            value = values[name]
            if value is not None and (type(value) is not str or len(value.encode()) > 255):
                return None
        for name in ("delivery_mode", "priority"):
            value = values[name]
            if value is not None and (type(value) is not int or not 0 <= value <= 255):
                return None
        stamp = values["timestamp"]
        if stamp is not None and (type(stamp) is not int or not 0 <= stamp < 2**64):
            return None
        headers = values["headers"]
        if headers is not None:
            if type(headers) is not dict:
                return None
            for key, value in headers.items():
                if type(key) is not str or len(key.encode()) > 255:
                    return None
                kind = type(value)
                if kind is str:
                    value.encode()  # a lone surrogate cannot be sent
                elif not (value is None or kind is bool or (kind is int and value in _INT32)):
                    return None
            headers = dict(headers)
    except (UnicodeError, KeyError):
        return None
    copy = object.__new__(_GuardedBasicProperties)
    copy.__dict__.update(values)
    copy.headers = headers
    return copy
