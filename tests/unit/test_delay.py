"""hutch._delay: the delay check and the delay-queue builder (no broker)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from hutch._delay import DELAY_QUEUE_GRACE, check_delay, delay_queue

seconds = st.floats(min_value=0, max_value=4_294_967.295, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(s=seconds)
def test_valid_delays_are_rounded_to_milliseconds(s: float) -> None:
    ms = check_delay("delay", s)
    assert 0 <= ms <= 2**32 - 1
    assert abs(ms - s * 1000) <= 0.5 + 1e-6


@settings(max_examples=60, deadline=None)
@given(td=st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=49)))
def test_timedelta_is_the_same_as_its_seconds(td: dt.timedelta) -> None:
    assert check_delay("delay", td) == check_delay("delay", td.total_seconds())


@settings(max_examples=40, deadline=None)
@given(
    exchange=st.text(max_size=300),
    routing_key=st.text(max_size=300),
    ms=st.integers(1, 2**32 - 1),
)
def test_the_builder_targets_the_exchange_and_key_within_amqp_limits(
    exchange: str, routing_key: str, ms: int
) -> None:
    q = delay_queue(exchange, routing_key, ms, durable=True)
    assert len(q.name.encode()) <= 255
    args = q.arguments
    assert args["x-message-ttl"] == ms
    assert args["x-dead-letter-exchange"] == exchange
    assert args["x-dead-letter-routing-key"] == routing_key
    assert args["x-expires"] == round(ms + DELAY_QUEUE_GRACE * 1000)


def test_names() -> None:
    assert delay_queue("", "jobs", 1500, durable=True).name == "jobs.delay.1500"
    assert delay_queue("", "jobs", 1500, durable=True, kind="retry").name == "jobs.retry.1500"
    assert delay_queue("orders", "a.b", 20, durable=False).name == "orders.delay.20/a.b"
