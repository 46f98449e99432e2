"""hutch's AMQP layer: the only package that imports pika.

The patterns (Publisher, Subscriber, WorkerPool, RPC) use what is exported here and
nothing else: a channel typed as :class:`ChannelApi` (declare, consume, publish with a
confirm handle, ack/nack, wait), which :class:`Channel` serves on RabbitMQ and the memory
broker's adapter in-process, the messages and batches it publishes, the :class:`Delivery` it hands
over, and hutch's properties converted to the wire. :class:`Driver` (the thread rules of
pika's BlockingConnection) is used by :class:`hutch.Connection` alone.
See docs/architecture.md.
"""

from hutch._amqp.api import ChannelApi
from hutch._amqp.channel import SEND_EVERY, Channel
from hutch._amqp.confirms import Batch, OutgoingMessage
from hutch._amqp.driver import Driver
from hutch._amqp.errors import map_pika_error
from hutch._amqp.properties import (
    RAW_HEADERS,
    Delivery,
    UndecodableHeaders,
    basic_properties,
    decode_properties,
    from_pika_properties,
    to_pika_properties,
)

__all__ = [
    "RAW_HEADERS",
    "SEND_EVERY",
    "Batch",
    "Channel",
    "ChannelApi",
    "Delivery",
    "Driver",
    "OutgoingMessage",
    "UndecodableHeaders",
    "basic_properties",
    "decode_properties",
    "from_pika_properties",
    "map_pika_error",
    "to_pika_properties",
]
