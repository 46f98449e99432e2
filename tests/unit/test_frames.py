"""hutch._amqp.frames: a basic.publish marshalled in one buffer, and a basic.ack, are pika's
bytes, byte for byte."""

from __future__ import annotations

import struct
from typing import Any

import pika
import pika.exceptions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pika import frame, spec

from hutch._amqp.frames import ack_frame, publish_frames
from tests.hostile.strategies import basic_properties, raw_field_encoder

pytestmark = pytest.mark.timeout(120)

# what pika (and so hutch) raises for a name or a property AMQP cannot carry
_REFUSED = (pika.exceptions.AMQPError, TypeError, ValueError, OverflowError)


def _pika_bytes(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    props: pika.BasicProperties,
    mandatory: bool,
    body_max: int,
) -> bytes:
    # pika's Connection._send_message, frame by frame
    method = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
    pieces = [
        frame.Method(channel, method).marshal(),
        frame.Header(channel, len(body), props).marshal(),
    ]
    for start in range(0, len(body), body_max):
        pieces.append(frame.Body(channel, body[start : start + body_max]).marshal())
    return b"".join(pieces)


_names = st.one_of(
    st.text(max_size=20),
    st.text(min_size=250, max_size=260),  # around the 255-byte limit of a short string
    st.sampled_from(["", "amq.topic", "amq.rabbitmq.reply-to.g1h2AA5yZXBseQ==", "\ud800"]),
)


@settings(max_examples=300, deadline=None)
@given(
    channel=st.integers(1, 65535),
    exchange=_names,
    routing_key=_names,
    body=st.binary(max_size=200),
    body_max=st.integers(1, 64),
    mandatory=st.booleans(),
    props=basic_properties(),
)
def test_publish_frames_are_pikas_bytes(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    body_max: int,
    mandatory: bool,
    props: dict[str, Any],
) -> None:
    properties = pika.BasicProperties(**props)
    with raw_field_encoder():  # header values a foreign producer might hold, verbatim
        try:
            want: bytes | None = _pika_bytes(
                channel, exchange, routing_key, body, properties, mandatory, body_max
            )
        except _REFUSED:
            want = None
        try:
            got: bytes | None = publish_frames(
                channel, exchange, routing_key, body, properties, mandatory, body_max
            )
        except _REFUSED:
            got = None
    assert got == want


def test_a_name_too_long_for_amqp_is_refused_before_anything_is_marshalled() -> None:
    with pytest.raises(ValueError, match="at most 255 bytes"):
        publish_frames(1, "", "é" * 128, b"x", pika.BasicProperties(), False, 100)
    with pytest.raises(UnicodeEncodeError):
        publish_frames(1, "\ud800", "q", b"x", pika.BasicProperties(), False, 100)


def test_the_method_frame_is_cached_per_destination_and_flag() -> None:
    props = pika.BasicProperties()
    a = publish_frames(7, "x", "k", b"", props, False, 10)
    b = publish_frames(7, "x", "k", b"", props, True, 10)
    assert a != b  # the mandatory bit
    assert a == _pika_bytes(7, "x", "k", b"", props, False, 10)
    assert b == _pika_bytes(7, "x", "k", b"", props, True, 10)


@settings(max_examples=300, deadline=None)
@given(
    channel=st.integers(1, 65535),
    tag=st.one_of(st.integers(0, 2**64 - 1), st.integers(-(2**70), 2**70)),
    multiple=st.booleans(),
)
def test_ack_frames_are_pikas_bytes(channel: int, tag: int, multiple: bool) -> None:
    try:
        want: bytes | None = frame.Method(channel, spec.Basic.Ack(tag, multiple)).marshal()
    except (*_REFUSED, struct.error):
        want = None
    try:
        got: bytes | None = ack_frame(channel, tag, multiple)
    except (*_REFUSED, struct.error):
        got = None
    assert got == want
