"""What a message carries arrives the same through either broker: generated headers and
properties, published and received with hutch on RabbitMQ and on the memory broker.

The memory broker keeps plain Python values where RabbitMQ sends AMQP field tables over
the wire; hutch must hand a consumer the same headers and properties either way, or fail
the same way on a value AMQP cannot carry. A disagreement is a bug.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import hutch
from tests.integration.comparing import compare_settings, compare_timeout

pytestmark = [
    compare_timeout(300),
    pytest.mark.rabbitmq_only("compares the memory broker with RabbitMQ itself"),
]

_short_text = st.text(max_size=12)
_scalar = st.one_of(
    _short_text,
    st.integers(-(2**63), 2**63 - 1),
    st.integers(),
    st.booleans(),
    st.binary(max_size=8),
    st.none(),
    st.floats(allow_nan=False),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-1000, max_value=1000),
    st.datetimes(
        min_value=dt.datetime(1970, 1, 1),
        max_value=dt.datetime(2100, 1, 1),
        timezones=st.sampled_from([dt.timezone.utc]),
    ).map(lambda d: d.replace(microsecond=0)),
)
_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_short_text, inner, max_size=3)
    ),
    max_leaves=6,
)
_headers = st.one_of(st.none(), st.dictionaries(st.text(min_size=1, max_size=10), _value))
_properties = st.fixed_dictionaries(
    {},
    optional={
        "content_type": _short_text,
        "content_encoding": _short_text,
        "correlation_id": _short_text,
        "reply_to": _short_text,
        "message_id": _short_text,
        "type": _short_text,
        "app_id": _short_text,
        "priority": st.integers(0, 9),
        "delivery_mode": st.sampled_from([1, 2]),
        "expiration": st.integers(1, 10**9).map(str),
        "timestamp": st.datetimes(
            min_value=dt.datetime(1970, 1, 1),
            max_value=dt.datetime(2100, 1, 1),
            timezones=st.just(dt.timezone.utc),
        ).map(lambda d: d.replace(microsecond=0)),
    },
)


class Side:
    """A connection, a queue and a subscriber reading it raw, on one broker."""

    def __init__(self, url: str) -> None:
        self.conn = hutch.connect(url)
        queue = hutch.Queue(f"roundtrip-{uuid.uuid4().hex[:8]}", auto_delete=True)
        self.sub = hutch.Subscriber(self.conn, queue=queue, model=bytes).open()
        self.pub = hutch.Publisher(self.conn, routing_key=queue.name, model=bytes).open()

    def round_trip(self, headers: Any, properties: dict[str, Any]) -> Any:
        try:
            self.pub.publish(b"x", headers=headers, **properties)
        except Exception as exc:  # what hutch says about a value it cannot send
            return ("refused", type(exc).__name__, str(exc))
        got = list(self.sub.messages(limit=1, timeout=10))
        assert len(got) == 1
        return ("received", got[0].properties)

    def close(self) -> None:
        self.pub.close()
        self.sub.close()
        self.conn.close()


@pytest.fixture(scope="module")
def sides(amqp_url: str) -> Iterator[tuple[Side, Side]]:
    rabbit, memory = Side(amqp_url), Side(f"memory://roundtrip-{uuid.uuid4().hex[:8]}")
    yield rabbit, memory
    rabbit.close()
    memory.close()


@compare_settings(200)
@given(headers=_headers, properties=_properties)
def test_headers_and_properties_arrive_the_same(
    sides: tuple[Side, Side], headers: Any, properties: dict[str, Any]
) -> None:
    rabbit, memory = sides
    # hutch stamps a message id and the time when the caller does not: fix them
    properties = {
        "message_id": "m",
        "timestamp": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    } | (properties)
    got_rabbit = rabbit.round_trip(headers, properties)
    got_memory = memory.round_trip(headers, properties)
    assert got_memory == got_rabbit
    event(got_rabbit[0] if got_rabbit[0] == "received" else f"refused: {got_rabbit[1]}")
