"""hutch._amqp.properties: timestamps in headers come out aware UTC on every pika version; the
cheap "nothing to decode" test never lets a problem through."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch._amqp.properties import (
    UndecodableHeaders,
    aware_timestamps,
    decode_properties,
    plainly_decodable,
)
from hutch._amqp.wire import WIRE_ERRORS, wire_copy

pytestmark = pytest.mark.timeout(60)

UTC = dt.timezone.utc

_naive = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(9999, 1, 1))
_leaf = st.one_of(
    _naive, _naive.map(lambda d: d.replace(tzinfo=UTC)), st.integers(-(2**63), 2**63 - 1), st.text()
)
_values = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


def _datetimes(value: Any) -> list[dt.datetime]:
    if isinstance(value, dt.datetime):
        return [value]
    if isinstance(value, dict):
        return [d for v in value.values() for d in _datetimes(v)]
    if isinstance(value, list):
        return [d for v in value for d in _datetimes(v)]
    return []


@settings(max_examples=60, deadline=None)
@given(headers=st.dictionaries(st.text(max_size=5), _values, max_size=4))
def test_naive_header_timestamps_come_out_aware_utc(headers: dict[str, Any]) -> None:
    # pika 1.3 decodes an AMQP timestamp as a naive datetime in UTC, 1.4 as an aware one
    props, problem = decode_properties(pika.BasicProperties(headers=headers))
    assert problem is None
    got = _datetimes(props.headers)
    assert [d.tzinfo for d in got] == [UTC] * len(got)
    # the same instants: a naive value was UTC
    want = [d if d.tzinfo else d.replace(tzinfo=UTC) for d in _datetimes(headers)]
    assert got == want


def test_a_table_without_naive_datetimes_is_kept_as_it_is() -> None:
    table = {"a": [1, {"b": dt.datetime(2024, 1, 1, tzinfo=UTC)}], "c": "x"}
    assert aware_timestamps(table) is table


def test_what_this_pika_decodes_comes_out_aware() -> None:
    pieces: list[bytes] = []
    pika.data.encode_table(pieces, {"when": dt.datetime(2024, 5, 1, 12, tzinfo=UTC)})
    encoded = pika.BasicProperties(headers={"when": dt.datetime(2024, 5, 1, 12, tzinfo=UTC)})
    data = b"".join(encoded.encode())
    props, _ = decode_properties(pika.BasicProperties().decode(data))
    assert dict(props.headers or {}) == {"when": dt.datetime(2024, 5, 1, 12, tzinfo=UTC)}


# anything a property may hold after pika decoded a frame (or a bug put there): right and
# wrong types, digits and not, bytes that are not UTF-8
_anything = st.one_of(
    st.none(),
    st.text(max_size=6),
    st.text(alphabet="0123456789", min_size=1, max_size=6),
    st.binary(max_size=6),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.floats(),
    _values,
)
_headers = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=3), st.binary(max_size=3)), _anything, max_size=3),
    st.builds(UndecodableHeaders, st.binary(max_size=4), st.text(max_size=4)),
    _anything,
)
# every property but headers, as pika names them
_NAMES = tuple(name for name in vars(pika.BasicProperties()) if name != "headers")


_PLAIN: dict[str, st.SearchStrategy[Any]] = {
    **{name: st.none() | st.text(max_size=6) for name in _NAMES},
    "expiration": st.none() | st.text(alphabet="0123456789", min_size=1, max_size=6),
    "delivery_mode": st.sampled_from([None, 1, 2]),
    "priority": st.none(),
    "timestamp": st.none(),
}


def _mostly_plain(name: str) -> st.SearchStrategy[Any]:
    # one value in six is anything at all: most draws are plain but for one or two values,
    # which is where a cheap test would let a problem slip through
    return st.integers(0, 5).flatmap(lambda i: _anything if i == 0 else _PLAIN[name])


@settings(max_examples=500, deadline=None)
@given(
    values=st.fixed_dictionaries({name: _mostly_plain(name) for name in _NAMES}),
    headers=st.integers(0, 2).flatmap(
        lambda i: _headers if i == 0 else st.none() | st.dictionaries(st.text(), st.text())
    ),
)
def test_plainly_decodable_properties_have_no_problem(values: dict[str, Any], headers: Any) -> None:
    props = pika.BasicProperties()
    for name, value in {**values, "headers": headers}.items():
        setattr(props, name, value)  # as a decoder would: no checks on the way
    if plainly_decodable(props):
        assert decode_properties(props)[1] is None


def test_an_rpc_request_is_plainly_decodable() -> None:
    # the hot path this exists for: what hutch's RpcClient sends
    request = pika.BasicProperties(
        content_type="application/json",
        correlation_id="3f2a",
        reply_to="amq.rabbitmq.reply-to.g1h2AA5yZXBseQ==",
        expiration="10000",
        delivery_mode=1,
        headers={"x-hutch-procedure": "add"},
    )
    assert plainly_decodable(request)
    for bad in ({"expiration": "soon"}, {"reply_to": b"\xff"}, {"headers": {"n": 1}}):
        odd = pika.BasicProperties(**{**request.__dict__, **bad})
        assert not plainly_decodable(odd), bad


@given(value=st.one_of(st.integers(min_value=2**64), st.integers(max_value=-(2**63) - 1)))
def test_an_int_past_64_bits_is_an_encoding_error_a_publish_reports(value: int) -> None:
    # pika raises struct.error for it; both backends turn WIRE_ERRORS into a PublishError
    # (the publisher's checks refuse such a header first; this is the net under them).
    # From 2**63 to 2**64 - 1 the lowest pika packs an unsigned int under the signed tag.
    with pytest.raises(WIRE_ERRORS):
        wire_copy(pika.BasicProperties(headers={"n": value}))
