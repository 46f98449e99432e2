"""hutch._amqp.properties: timestamps in headers come out aware UTC on every pika version."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch._amqp.properties import aware_timestamps, decode_properties

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
