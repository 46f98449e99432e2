"""Delayed messages through broker-side delay queues, measured against the real broker."""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hutch import Binding, Connection, Exchange, Publisher, Queue, TaskQueue, WorkerPool
from hutch._amqp import Delivery
from hutch._clock import Mailbox

pytestmark = pytest.mark.timeout(120)

# how late a delayed message may arrive on this machine (the broker's expiry timer, the
# dead-letter hop, a loaded CI box); it is never early
LATE = 1.0


@pytest.fixture
def names(conn: Connection, unique_name: str) -> Iterator[list[str]]:
    """Queues (and exchanges, prefixed "x:") to delete after the test."""
    made: list[str] = [unique_name]
    yield made
    ch = conn.channel()
    for name in made:
        if name.startswith("x:"):
            ch.delete_exchange(name[2:])
        else:
            ch.delete_queue(name)
    ch.close()


def arrivals(conn: Connection, queue: str, count: int, within: float) -> list[tuple[float, bytes]]:
    """(time, body) of the first ``count`` messages consumed from ``queue`` in ``within`` s.

    Times are the connection's clock (``time.monotonic()`` on RabbitMQ, virtual time on the
    memory broker, which then jumps to each delay's expiry instead of sleeping it).
    """
    clock = conn.clock
    ch = conn.channel()
    box: Mailbox[Delivery] = Mailbox()
    got: list[tuple[float, bytes]] = []
    deadline = clock.now() + within
    tag = ch.consume(queue, box.put)
    try:
        while len(got) < count:
            d = box.get(clock, deadline)
            if d is None:
                break
            got.append((clock.now(), d.body))
            d.ack()
        ch.cancel(tag)
    finally:
        ch.close()  # what came after the count is requeued
    return got


def test_a_delayed_message_arrives_after_its_delay_not_before(
    conn: Connection, unique_name: str, names: list[str]
) -> None:
    q = Queue(unique_name, expires=120)
    clock = conn.clock
    with Publisher(conn, declare=[q]) as pub:
        pub.open()
        before = clock.now()
        pub.publish(b"later", routing_key=unique_name, delay=0.2)
        published = clock.now()
        names.extend(pub._delays.names)
        assert pub._delays.names == (f"{unique_name}.delay.200",)
        # nothing early (watched until 0.15 s after the publish began)
        assert arrivals(conn, unique_name, 1, before + 0.15 - clock.now()) == []
        got = arrivals(conn, unique_name, 1, 5)
    assert [body for _, body in got] == [b"later"]
    waited = got[0][0] - before
    assert 0.2 <= waited < 0.2 + LATE + (published - before), waited


def test_different_delays_arrive_in_delay_order(
    conn: Connection, unique_name: str, names: list[str]
) -> None:
    q = Queue(unique_name, expires=120)
    # 0.2 s apart: far more than publishing the six takes (each new delay declares a queue)
    delays: list[float | dt.timedelta] = [0.8, 0.2, dt.timedelta(seconds=0.6), 0.4, 0, 0.2]
    seconds = [d.total_seconds() if isinstance(d, dt.timedelta) else d for d in delays]
    clock = conn.clock
    with Publisher(conn, declare=[q]) as pub:
        start = clock.now()
        sent: list[float] = []
        for i, delay in enumerate(delays):
            pub.publish(str(i).encode(), routing_key=unique_name, delay=delay)
            sent.append(clock.now())
        names.extend(pub._delays.names)
        # one queue per distinct delay, none for 0
        assert len(pub._delays.names) == 4
        got = arrivals(conn, unique_name, len(delays), 10)
    order = [int(body) for _, body in got]
    assert order == sorted(range(len(delays)), key=lambda i: (seconds[i], i))
    for at, body in got:
        i = int(body)
        assert at - start >= seconds[i]  # never early
        assert at - sent[i] < seconds[i] + LATE


def test_a_delayed_message_to_an_exchange_is_routed_with_its_routing_key(
    conn: Connection, unique_name: str, names: list[str]
) -> None:
    ex = Exchange(f"{unique_name}.ex", "topic", durable=False, auto_delete=False)
    names.append(f"x:{ex.name}")
    q = Queue(unique_name, expires=120)
    binding = Binding(ex, q, routing_key="order.*")
    with Publisher(conn, exchange=ex, declare=[q, binding]) as pub:
        before = conn.clock.now()
        pub.publish(b"late order", routing_key="order.created", delay=0.2)
        names.extend(pub._delays.names)
        assert pub._delays.names == (f"{ex.name}.delay.200/order.created",)
        got = arrivals(conn, unique_name, 1, 5)
    assert [b for _, b in got] == [b"late order"]
    assert got[0][0] - before >= 0.2


def test_publish_async_with_a_delay(conn: Connection, unique_name: str, names: list[str]) -> None:
    q = Queue(unique_name, expires=120)
    with Publisher(conn, declare=[q]) as pub:
        before = conn.clock.now()
        pub.publish_async(b"a", routing_key=unique_name, delay=0.1).result(10)
        names.extend(pub._delays.names)
        got = arrivals(conn, unique_name, 1, 5)
    assert got and got[0][0] - before >= 0.1


def test_a_deleted_delay_queue_is_declared_again(
    conn: Connection, unique_name: str, names: list[str]
) -> None:
    q = Queue(unique_name, expires=120)
    with Publisher(conn, declare=[q]) as pub:
        pub.publish(b"1", routing_key=unique_name, delay=0.2)
        (delay_q,) = pub._delays.names
        names.append(delay_q)
        conn.channel().delete_queue(delay_q)  # lost with its message
        pub.publish(b"2", routing_key=unique_name, delay=0.2)  # returned, declared, sent
        got = arrivals(conn, unique_name, 1, 5)
    assert [b for _, b in got] == [b"2"]


def test_submit_with_a_delay_reaches_the_worker_pool_after_it(
    conn: Connection, unique_name: str, names: list[str]
) -> None:
    names.append(f"{unique_name}.dead")
    handled: list[tuple[float, str]] = []
    done = threading.Event()

    clock = conn.clock

    def handle(body: str) -> None:
        handled.append((clock.now(), body))
        if len(handled) == 2:
            done.set()

    q = Queue(unique_name, expires=120)
    with WorkerPool(conn, queue=q, handler=handle, model=str, concurrency=2) as pool:
        pool.start()
        with TaskQueue(conn, queue=q, model=str) as tasks:
            before = clock.now()
            tasks.submit("later", delay=0.3)
            tasks.submit("now")
            names.append(f"{unique_name}.delay.300")
            assert clock.wait(done.is_set, done.wait, None, poll=10)
    assert [b for _, b in handled] == ["now", "later"]
    assert handled[1][0] - before >= 0.3
    assert handled[1][0] - before < 0.3 + LATE + 0.5


bad_delays = st.one_of(
    st.floats(max_value=-1e-9),
    st.floats(min_value=4_294_967.3, allow_infinity=False),
    st.sampled_from([math.inf, -math.inf, math.nan]),
    st.integers(max_value=-1),
    st.integers(min_value=4_294_968),
    st.timedeltas(max_value=dt.timedelta(microseconds=-1)),
    st.timedeltas(min_value=dt.timedelta(days=50)),
)
wrong_types = st.one_of(
    st.booleans(), st.text(max_size=5), st.binary(max_size=5), st.lists(st.integers(), max_size=2)
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(delay=st.one_of(bad_delays, wrong_types))
def test_bad_delays_raise_at_once_and_send_nothing(
    conn: Connection, unique_name: str, names: list[str], delay: object
) -> None:
    q = Queue(unique_name, expires=120)
    expected = (
        TypeError if delay is None or isinstance(delay, (bool, str, bytes, list)) else ValueError
    )
    with Publisher(conn, declare=[q]) as pub, TaskQueue(conn, queue=q) as tasks:
        with pytest.raises(expected, match="delay"):
            pub.publish(b"x", routing_key=unique_name, delay=delay)  # type: ignore[arg-type]
        with pytest.raises(expected, match="delay"):
            pub.publish_async(b"x", routing_key=unique_name, delay=delay)  # type: ignore[arg-type]
        with pytest.raises(expected, match="delay"):
            tasks.submit(b"x", delay=delay)  # type: ignore[arg-type]
        assert pub._delays.names == ()
    ch = conn.channel()
    assert ch.message_count(unique_name) == 0
    ch.close()


def test_delay_and_expiration_cannot_be_combined(conn: Connection, unique_name: str) -> None:
    with Publisher(conn) as pub, pytest.raises(ValueError, match="expiration"):
        pub.publish(b"x", routing_key=unique_name, delay=1, expiration="500")
