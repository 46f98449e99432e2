"""A message's ``basic.publish`` frames, marshalled into one buffer (the publish hot path).

pika marshals a message as three frame objects (method, content header, body), each
encoded through its generic ``encode`` machinery and handed to the transport one write
at a time. On a latency path (an RPC server's reply, a blocking call's request) that is
the largest single piece of Python between taking the connection and the ``send``. Here
the method frame of a destination is built once and cached, the properties are encoded
by pika's own ``BasicProperties.encode`` (so every property and header value is encoded
exactly as pika would, and refused exactly as pika would), and the frames are joined into
one buffer that pika's connection outputs in one write
(:func:`hutch._amqp.pika_private.publish`).

The bytes are pika's, byte for byte: ``tests/unit/test_frames.py`` compares them with
pika's ``frame.Method`` / ``frame.Header`` / ``frame.Body`` for generated messages.
"""

from __future__ import annotations

import struct

import pika

__all__ = ["ack_frame", "publish_frames"]

_FRAME = struct.Struct(">BHI")  # frame type, channel, payload size
_HEADER = struct.Struct(">BHIHxxQ")  # + content class (60, basic), weight 0, body size
_FRAME_END = b"\xce"
_PUBLISH = struct.pack(">IH", (60 << 16) | 40, 0)  # basic.publish, ticket 0
_ACK = struct.Struct(">BHIIQB")  # frame type 1, channel, size 13, basic.ack, tag, multiple
_METHODS: dict[tuple[int, str, str, bool], bytes] = {}
_METHODS_MAX = 1024


def _short_string(value: str) -> bytes:
    data = value.encode()  # a lone surrogate: UnicodeEncodeError, a ValueError
    if len(data) > 255:
        raise ValueError(f"a short string holds at most 255 bytes, not {len(data)}")
    return bytes((len(data),)) + data


def _method_frame(channel: int, exchange: str, routing_key: str, mandatory: bool) -> bytes:
    key = (channel, exchange, routing_key, mandatory)
    frame = _METHODS.get(key)
    if frame is None:
        payload = b"".join(
            (
                _PUBLISH,
                _short_string(exchange),
                _short_string(routing_key),
                b"\x01" if mandatory else b"\x00",
            )
        )
        frame = _FRAME.pack(1, channel, len(payload)) + payload + _FRAME_END
        if len(_METHODS) >= _METHODS_MAX:
            _METHODS.clear()  # many destinations (reply queues come and go): start over
        _METHODS[key] = frame
    return frame


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: pika.BasicProperties,
    mandatory: bool,
    body_max: int,
) -> bytes:
    """The frames of one ``basic.publish``, as pika would marshal them, in one buffer.

    Args:
        channel: The channel number.
        exchange: The exchange name.
        routing_key: The routing key.
        body: The message body.
        properties: Its properties, encoded by pika.
        mandatory: The mandatory flag.
        body_max: The largest body frame payload (the connection's ``frame_max`` - 8).

    Raises:
        ValueError, TypeError, pika.exceptions.AMQPError: A name or a property that AMQP
            cannot carry, as pika raises it (nothing is marshalled then).
    """
    method = _method_frame(channel, exchange, routing_key, mandatory)
    encoded = b"".join(properties.encode())
    size = len(body)
    pieces = [method, _HEADER.pack(2, channel, 12 + len(encoded), 60, size), encoded, _FRAME_END]
    for start in range(0, size, body_max):
        chunk = body[start : start + body_max]
        pieces += (_FRAME.pack(3, channel, len(chunk)), chunk, _FRAME_END)
    return b"".join(pieces)


def ack_frame(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """The frame of one ``basic.ack``, as pika would marshal it.

    Raises:
        struct.error: A delivery tag that is not an unsigned 64-bit integer.
    """
    return _ACK.pack(1, channel, 13, (60 << 16) | 80, delivery_tag, multiple) + _FRAME_END
