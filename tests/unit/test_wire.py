"""The memory broker's simulated wire: a plain copy gives what the round trip through pika
would, value for value and type for type, and never copies what the wire refuses."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pika
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch._amqp.properties import _SHORT_STRINGS as _SHORT
from hutch._amqp.properties import _GuardedBasicProperties
from hutch._amqp.wire import plain_copy, wire_copy

# what hutch sends: the plain copy's domain, near its edges
_plain_strings = st.one_of(st.text(max_size=20), st.text(min_size=60, max_size=90))
_plain_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.sampled_from([-(2**31), 2**31 - 1, 0]),
    _plain_strings,
)
_plain = st.fixed_dictionaries(
    {name: st.one_of(st.none(), _plain_strings) for name in _SHORT},
    optional={
        "delivery_mode": st.one_of(st.none(), st.integers(0, 255)),
        "priority": st.one_of(st.none(), st.integers(0, 255)),
        "timestamp": st.one_of(st.none(), st.integers(0, 2**64 - 1)),
        "headers": st.one_of(st.none(), st.dictionaries(st.text(max_size=20), _plain_values)),
    },
)

# and anything else: the edges of every rule, other types, values the wire refuses
_any_strings = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["\ud800", "a\udfffb", "é" * 128, "é" * 127 + "e"]),  # 256 and 255 bytes
)
_any_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        _plain_values,
        _any_strings,
        st.integers(),
        st.sampled_from([2**31, -(2**31) - 1, 2**63 - 1, -(2**63), 2**63, 2**64]),
        st.floats(allow_nan=False),
        st.binary(max_size=10),
        st.decimals(places=2, allow_nan=False, allow_infinity=False, max_value=10**6),
        st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1)),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)
_any = st.fixed_dictionaries(
    {},
    optional={
        **{name: st.one_of(st.none(), _any_strings, st.integers(), st.binary()) for name in _SHORT},
        "delivery_mode": st.one_of(st.none(), st.integers(-3, 300), st.booleans()),
        "priority": st.one_of(st.none(), st.integers(-3, 300), st.text(max_size=2)),
        "timestamp": st.one_of(
            st.none(),
            st.integers(-3, 2**65),
            st.booleans(),
            st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1)),
        ),
        "headers": st.one_of(
            st.none(),
            st.dictionaries(st.one_of(_any_strings, st.integers()), _any_values, max_size=4),
            st.lists(st.integers(), max_size=2),
        ),
    },
)


def typed(value: Any) -> Any:
    """``value`` with the type of every part, and a dict's order: what a consumer sees."""
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, value)


def round_trip(props: pika.BasicProperties) -> dict[str, Any] | None:
    """The fields after pika's encoding and hutch's decoding; None if they cannot be sent."""
    try:
        encoded = b"".join(props.encode())
    except Exception:  # hutch's checks refuse all of these before a publish
        return None
    return dict(_GuardedBasicProperties().decode(encoded).__dict__)


def check(fields: dict[str, Any]) -> bool:
    props = pika.BasicProperties(**fields)
    copy = plain_copy(props)
    if copy is None:
        return False
    expected = round_trip(props)
    assert expected is not None, "a plain copy of properties the wire refuses"
    assert typed(dict(copy.__dict__)) == typed(expected)
    if props.headers is not None:
        assert copy.headers is not props.headers  # the publisher's dict is not shared
    return True


@settings(max_examples=400)
@given(fields=_plain)
def test_a_plain_copy_is_what_the_wire_gives_back(fields: dict[str, Any]) -> None:
    assert check(fields)  # every one of these is plain


@settings(max_examples=400)
@given(fields=_any)
def test_anything_else_takes_the_wire_or_copies_the_same(fields: dict[str, Any]) -> None:
    check(fields)


def test_what_a_plain_copy_leaves_to_the_wire() -> None:
    for fields in (
        {"headers": {"n": 2**31}},  # 64-bit ints: decoded differently by the lowest pika
        {"headers": {"b": b"x"}},
        {"headers": {"f": 1.5}},
        {"headers": {"d": decimal.Decimal("1.5")}},
        {"headers": {"t": dt.datetime(2026, 1, 1)}},
        {"headers": {"nested": {"a": 1}}},
        {"headers": {"s": "\ud800"}},
        {"message_id": "é" * 128},
        {"priority": 256},
        {"timestamp": dt.datetime(2026, 1, 1)},
    ):
        assert plain_copy(pika.BasicProperties(**fields)) is None, fields
    # and the wire copy of those it can send is the round trip
    props = pika.BasicProperties(headers={"b": b"x", "n": 2**40})
    assert typed(dict(wire_copy(props).__dict__)) == typed(round_trip(props))
