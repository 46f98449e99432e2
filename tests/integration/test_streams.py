"""Streams, stream offsets, single active consumer and quorum delivery limits (real broker)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from hutch import Connection, Publisher, Queue, Subscriber

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.rabbitmq_only(
        "streams (x-queue-type=stream, offsets) are not in the memory broker"
    ),
]


@pytest.fixture
def cleanup(conn: Connection) -> Iterator[list[str]]:
    """Names of durable queues (streams, quorum) to delete after the test."""
    names: list[str] = []
    yield names
    ch = conn.channel()
    for name in names:
        ch.delete_queue(name)
    ch.close()


def stream(name: str, cleanup: list[str]) -> Queue:
    cleanup.append(name)
    return Queue(name, queue_type="stream")


def publish(conn: Connection, queue: Queue, bodies: list[int]) -> None:
    with Publisher(conn, routing_key=queue.name, model=int, declare=[queue]) as pub:
        for body in bodies:
            pub.publish(body)


def read_all(conn: Connection, queue: Queue, **options: object) -> list[int]:
    with Subscriber(conn, queue=queue, model=int, prefetch=50, **options) as sub:  # type: ignore[call-overload]
        return [m.body for m in sub.messages(timeout=1.5)]


def test_stream_replays_messages_published_before_the_subscriber_from_first(
    conn: Connection, unique_name: str, cleanup: list[str]
) -> None:
    q = stream(unique_name, cleanup)
    publish(conn, q, list(range(20)))
    assert read_all(conn, q, offset="first") == list(range(20))
    # a stream keeps its messages: a second reader from "first" sees them all again
    assert read_all(conn, q, offset="first") == list(range(20))
    # the broker's default ("next") sees none of the old ones
    assert read_all(conn, q) == []


def test_stream_whole_number_offset_starts_there(
    conn: Connection, unique_name: str, cleanup: list[str]
) -> None:
    q = stream(unique_name, cleanup)
    publish(conn, q, list(range(10)))
    assert read_all(conn, q, offset=6) == [6, 7, 8, 9]


def test_stream_datetime_offset_skips_earlier_messages(
    conn: Connection, unique_name: str, cleanup: list[str]
) -> None:
    # The broker keeps one timestamp per chunk and the wire carries whole seconds, so the
    # gap on each side of the moment is generous (> 1 s).
    q = stream(unique_name, cleanup)
    publish(conn, q, [1, 2, 3])
    time.sleep(1.6)
    moment = dt.datetime.now(dt.timezone.utc)
    time.sleep(1.6)
    publish(conn, q, [4, 5, 6])
    assert read_all(conn, q, offset=moment) == [4, 5, 6]
    # a naive datetime is local time, as everywhere in Python
    naive_local = moment.astimezone().replace(tzinfo=None)
    assert read_all(conn, q, offset=naive_local) == [4, 5, 6]
    assert read_all(conn, q, offset=moment - dt.timedelta(hours=1)) == [1, 2, 3, 4, 5, 6]


def test_consumer_arguments_pass_through(conn: Connection, unique_name: str) -> None:
    # x-stream-offset given by hand is the same as offset=...; "offset" wins over it
    q = Queue(unique_name, queue_type="stream")
    try:
        publish(conn, q, [1, 2, 3])
        assert read_all(conn, q, consumer_arguments={"x-stream-offset": "first"}) == [1, 2, 3]
        assert read_all(conn, q, consumer_arguments={"x-stream-offset": 2}, offset=0) == [1, 2, 3]
    finally:
        conn.channel().delete_queue(q.name)


def test_single_active_consumer_fails_over(conn: Connection, unique_name: str) -> None:
    q = Queue(unique_name, durable=False, expires=60, single_active_consumer=True)
    first = Subscriber(conn, queue=q, model=int, prefetch=1).open()
    second = Subscriber(conn, queue=q, model=int, prefetch=1).open()
    try:
        publish(conn, q, list(range(10)))
        assert [first.get(timeout=5) is not None for _ in range(3)] == [True] * 3
        # the waiting consumer gets nothing while the active one lives...
        assert second.get(timeout=1.0) is None
        assert conn.channel().message_count(q.name) >= 6
        first.close()
        # ...and takes over, in order, once it is gone
        rest = [m.body for m in second.messages(timeout=3)]
        assert rest == list(range(3, 10))
    finally:
        first.close()
        second.close()


def test_quorum_delivery_limit_dead_letters_after_n_redeliveries(
    conn: Connection, unique_name: str, cleanup: list[str]
) -> None:
    dead = Queue(f"{unique_name}.dead", durable=False, expires=60)
    q = Queue(
        unique_name,
        queue_type="quorum",
        delivery_limit=2,
        dead_letter_exchange="",
        dead_letter_routing_key=dead.name,
    )
    cleanup.append(q.name)
    ch = conn.channel()
    ch.declare([dead, q])
    publish(conn, q, [42])
    deliveries = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        d = ch.get(q)
        if d is None:
            if ch.message_count(dead.name) == 1:
                break
            time.sleep(0.05)
            continue
        deliveries += 1
        d.nack(requeue=True)
    # the first delivery and delivery_limit redeliveries; the next return dead-letters it
    assert deliveries == 3
    assert ch.message_count(q.name) == 0
    assert ch.message_count(dead.name) == 1
    ch.close()
