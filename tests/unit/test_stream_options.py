"""Streams, single active consumer, delivery limit and stream offsets: argument checks."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch import Queue, QueueType
from hutch._subscriber import consumer_args
from hutch._topology import Exchange, ExchangeType, TopologyDataError


def test_stream_queue_arguments_and_round_trip() -> None:
    q = Queue("log", queue_type="stream")
    assert q.arguments == {"x-queue-type": "stream"}
    assert Queue.from_dict(q.to_dict()).arguments == q.arguments
    assert QueueType("stream") is QueueType.STREAM


@pytest.mark.parametrize("flags", [{"durable": False}, {"exclusive": True}, {"auto_delete": True}])
def test_streams_must_be_durable_shared_and_kept(flags: dict[str, bool]) -> None:
    with pytest.raises(ValueError, match="stream queues must be durable"):
        Queue("log", queue_type="stream", **flags)  # type: ignore[arg-type]


def test_single_active_consumer_and_delivery_limit() -> None:
    q = Queue("jobs", queue_type="quorum", single_active_consumer=True, delivery_limit=5)
    assert q.arguments == {
        "x-queue-type": "quorum",
        "x-single-active-consumer": True,
        "x-delivery-limit": 5,
    }
    again = Queue.from_dict(q.to_dict())
    assert again.arguments == q.arguments
    assert Queue("c", single_active_consumer=True).arguments == {"x-single-active-consumer": True}
    with pytest.raises(ValueError, match="delivery_limit needs queue_type='quorum'"):
        Queue("c", delivery_limit=3)
    with pytest.raises(ValueError, match="not streams"):
        Queue("s", queue_type="stream", single_active_consumer=True)
    with pytest.raises(TypeError, match="single_active_consumer"):
        Queue("c", single_active_consumer="yes")  # type: ignore[arg-type]
    with pytest.raises(TopologyDataError, match="delivery_limit"):
        Queue.from_dict({"name": "q", "queue_type": "quorum", "delivery_limit": "3"})


@settings(max_examples=50, deadline=None)
@given(st.integers().filter(lambda n: n < 0))
def test_negative_delivery_limit_is_refused(n: int) -> None:
    with pytest.raises(ValueError, match="delivery_limit"):
        Queue("q", queue_type="quorum", delivery_limit=n)


def test_consistent_hash_exchange_type() -> None:
    ex = Exchange("parts", type="x-consistent-hash")
    assert ex.exchange_type is ExchangeType.CONSISTENT_HASH


@pytest.mark.parametrize("word", ["first", "last", "next"])
def test_offset_words(word: str) -> None:
    assert consumer_args(word, None) == {"x-stream-offset": word}


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_offset_numbers(n: int) -> None:
    assert consumer_args(n, {"x-priority": 3}) == {"x-stream-offset": n, "x-priority": 3}


@settings(max_examples=60, deadline=None)
@given(
    st.datetimes(
        min_value=dt.datetime(1971, 1, 1),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=-5))]),
    )
)
def test_offset_datetimes_go_as_utc(moment: dt.datetime) -> None:
    sent = consumer_args(moment, None)["x-stream-offset"]
    assert isinstance(sent, dt.datetime)
    assert sent == moment
    assert sent.utcoffset() == dt.timedelta(0)


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.text().filter(lambda s: s not in ("first", "last", "next")),
        st.integers(max_value=-1),
        st.floats(),
        st.booleans(),
        st.binary(),
        st.lists(st.integers(), max_size=2),
    )
)
def test_bad_offsets_are_refused_at_once(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="offset"):
        consumer_args(bad, None)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=3))
def test_bad_consumer_argument_tables_are_refused(table: dict[int, int]) -> None:
    with pytest.raises((TypeError, ValueError)):
        consumer_args(None, table)  # type: ignore[arg-type]
