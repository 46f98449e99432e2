"""hypothesis strategies for AMQP basic properties and header tables, as foreign clients send them.

Every field type RabbitMQ accepts in a table on the wire (``t b B s u I i l L f d D S x A T F
V``), with range edges, nested tables and arrays, byte arrays, decimals of any scale, huge
ints, NaN and infinite floats (the broker refuses those: the producer's connection is closed
with 541, so such a message never reaches a consumer and is counted as refused), strings
and keys that are not UTF-8, AMQP timestamps past year 9999, and ``timestamp`` properties in
milliseconds or nanoseconds.

pika's encoder refuses most of that, so values are wrapped in :class:`RawField` and
:func:`raw_field_encoder` extends pika's encoder to write them verbatim. This is test code
simulating a client in another language; hutch itself never sees a ``RawField``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pika.data
from hypothesis import strategies as st

__all__ = [
    "MAX_DATETIME_SECONDS",
    "RawField",
    "basic_properties",
    "field_values",
    "header_tables",
    "pika_properties",
    "raw_field_encoder",
    "timestamps",
]

#: The last second Python's datetime can represent (9999-12-31T23:59:59Z).
MAX_DATETIME_SECONDS = 253_402_300_799


@dataclass(frozen=True)
class RawField:
    """A table field written as ``kind`` followed by ``payload``, whatever pika thinks of it."""

    kind: bytes
    payload: bytes


@contextlib.contextmanager
def raw_field_encoder() -> Iterator[None]:
    """Let pika's table encoder write :class:`RawField` values verbatim (test producers only).

    Other values are encoded by pika's own encoder unchanged, so a hutch connection in the
    same process is not affected.
    """
    original: Callable[[list[bytes], Any], int] = pika.data.encode_value

    def encode_value(pieces: list[bytes], value: Any) -> int:
        if isinstance(value, RawField):
            pieces.append(value.kind + value.payload)
            return 1 + len(value.payload)
        return original(pieces, value)

    pika.data.encode_value = encode_value
    try:
        yield
    finally:
        pika.data.encode_value = original  # type: ignore[assignment]


def _packed(kind: bytes, fmt: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[RawField]:
    return values.map(lambda v: RawField(kind, struct.pack(fmt, v)))


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    # the edges of the range (and zero) turn up far more often than uniform draws give them
    edges = [low, low + 1, 0, high - 1, high]
    return st.one_of(
        st.sampled_from([e for e in edges if low <= e <= high]), st.integers(low, high)
    )


def timestamps() -> st.SearchStrategy[int]:
    """Unsigned 64-bit AMQP timestamps: seconds, the datetime edge, ms, ns, and extremes."""
    seconds = st.integers(0, MAX_DATETIME_SECONDS)
    return st.one_of(
        st.sampled_from(
            [0, 1, MAX_DATETIME_SECONDS, MAX_DATETIME_SECONDS + 1, 2**63 - 1, 2**63, 2**64 - 1]
        ),
        seconds,
        st.integers(1_500_000_000, 2_000_000_000).map(lambda s: s * 1000),  # milliseconds
        st.integers(1_500_000_000, 2_000_000_000).map(lambda s: s * 10**9 + 123),  # UnixNano()
        st.integers(0, 2**64 - 1),
    )


def _long_string(data: bytes) -> RawField:
    return RawField(b"S", struct.pack(">I", len(data)) + data)


_invalid_utf8 = st.one_of(
    st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"a\x80b"]),
    st.binary(min_size=1, max_size=40).filter(lambda b: not _is_utf8(b)),
)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.booleans(),  # 't' (pika)
        _packed(b"t", ">B", st.integers(0, 255)),  # any octet as a boolean
        _packed(b"b", ">b", _ints(-(2**7), 2**7 - 1)),
        _packed(b"B", ">B", _ints(0, 2**8 - 1)),
        _packed(b"s", ">h", _ints(-(2**15), 2**15 - 1)),
        _packed(b"u", ">H", _ints(0, 2**16 - 1)),
        _ints(-(2**31), 2**31 - 1),  # 'I' (pika)
        _packed(b"I", ">i", _ints(-(2**31), 2**31 - 1)),
        _packed(b"i", ">I", _ints(0, 2**32 - 1)),
        _ints(-(2**63), 2**63 - 1),  # 'l' (pika, beyond 32 bits)
        _packed(b"l", ">q", _ints(-(2**63), 2**63 - 1)),
        _packed(b"L", ">q", _ints(-(2**63), 2**63 - 1)),
        _packed(b"f", ">f", st.floats(width=32)),  # NaN and infinities included
        _packed(b"d", ">d", st.floats()),
        st.decimals(
            allow_nan=False, allow_infinity=False, places=2, min_value=-1000, max_value=1000
        ),
        st.builds(
            lambda scale, raw: RawField(b"D", struct.pack(">Bi", scale, raw)),
            st.integers(0, 255),
            _ints(-(2**31), 2**31 - 1),
        ),
        st.text(max_size=40),  # 'S' (pika)
        _invalid_utf8.map(_long_string),
        st.binary(max_size=40),  # 'x' (pika)
        timestamps().map(lambda t: RawField(b"T", struct.pack(">Q", t))),
        st.datetimes(min_value=_dt.datetime(1970, 1, 2), max_value=_dt.datetime(9999, 12, 30)).map(
            lambda d: d.replace(tzinfo=_dt.timezone.utc)
        ),  # 'T' (pika)
        st.none(),  # 'V'
    )


def _keys() -> st.SearchStrategy[str | bytes]:
    # short strings of at most 255 bytes; some are not UTF-8
    return st.one_of(
        st.text(min_size=1, max_size=20).filter(lambda k: len(k.encode()) <= 255),
        _invalid_utf8,
    )


def field_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any table field value, nested in arrays ('A') and tables ('F')."""
    return st.recursive(
        _scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(_keys(), inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def header_tables(max_leaves: int = 8) -> st.SearchStrategy[dict[Any, Any]]:
    """A headers table (may be empty)."""
    return st.dictionaries(_keys(), field_values(max_leaves), max_size=5)


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # one in eight draws is bad: with 14 properties, most messages are still fine otherwise
    return st.integers(0, 7).flatmap(lambda i: bad if i == 0 else good)


def _short_strings() -> st.SearchStrategy[str | bytes | None]:
    return _mostly(
        st.none() | st.text(max_size=30).filter(lambda s: len(s.encode()) <= 255),
        _invalid_utf8,
    )


@st.composite
def basic_properties(draw: st.DrawFn, *, user: str = "guest") -> dict[str, Any]:
    """Keyword arguments of ``pika.BasicProperties`` a foreign publisher might send.

    Only what RabbitMQ lets through: delivery modes 1 and 2, expirations that are numbers
    of milliseconds (long enough not to expire during a test) and ``user_id`` either absent
    or the connection's user; everything else is free.
    """
    props: dict[str, Any] = {
        name: draw(_short_strings())
        for name in ("content_type", "content_encoding", "correlation_id", "message_id")
    }
    props["reply_to"] = draw(_short_strings())
    props["type"] = draw(_short_strings())
    props["app_id"] = draw(_short_strings())
    props["cluster_id"] = draw(_short_strings())
    props["headers"] = draw(st.none() | header_tables())
    props["delivery_mode"] = draw(st.sampled_from([None, 1, 2]))
    props["priority"] = draw(st.none() | _ints(0, 255))
    props["expiration"] = draw(st.none() | st.integers(600_000, 10**9).map(str))
    props["timestamp"] = draw(
        st.none() | _mostly(st.integers(0, MAX_DATETIME_SECONDS), timestamps())
    )
    props["user_id"] = draw(st.sampled_from([None, user]))
    return props


def pika_properties(props: dict[str, Any]) -> pika.BasicProperties:
    """``pika.BasicProperties`` from what :func:`basic_properties` drew."""
    return pika.BasicProperties(**props)
