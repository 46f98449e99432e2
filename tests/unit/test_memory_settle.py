"""hutch.testing.settle: on the memory broker it waits for exactly what can still happen."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import hutch
from hutch import Publisher, Queue, Subscriber, WorkerPool
from hutch.testing import settle

pytestmark = pytest.mark.timeout(30)


def expiring(name: str, ttl: float, then: Queue) -> Queue:
    """A queue whose messages expire after ``ttl`` seconds into the queue ``then``."""
    return Queue(
        name,
        durable=False,
        message_ttl=ttl,
        dead_letter_exchange="",
        dead_letter_routing_key=then.name,
    )


@pytest.fixture
def conn(unique_name: str) -> Iterator[hutch.Connection]:
    from hutch._memory import forget_broker

    with hutch.connect(f"memory://{unique_name}") as c:
        yield c
    forget_broker(unique_name)


@pytest.mark.parametrize(("ttl", "quiet"), [(0.3, 2.0), (3_600, 7_200)])
def test_an_expiry_inside_the_window_happens_and_what_it_causes(
    conn: hutch.Connection, unique_name: str, ttl: float, quiet: float
) -> None:
    # the expiry is brought forward, not slept for: an hour's would outlast the test's timeout
    dead = Queue(f"{unique_name}.dead", durable=False)
    waiting = expiring(f"{unique_name}.wait", ttl, then=dead)
    sub = Subscriber(conn, queue=dead, model=str).open()
    with Publisher(conn, declare=[waiting], model=str) as pub:
        pub.publish("late", routing_key=waiting.name)
    settle(conn, quiet=quiet)
    # it happened, and the dead letter was delivered: the shortest wait finds it
    (got,) = sub.messages(timeout=0.001)
    assert got.body == "late"
    deaths = got.headers["x-death"]
    assert isinstance(deaths, list) and isinstance(deaths[0], dict)
    assert deaths[0]["reason"] == "expired"
    sub.close()


def test_an_expiry_beyond_the_window_is_not_waited_for(
    conn: hutch.Connection, unique_name: str
) -> None:
    waiting = Queue(f"{unique_name}.wait", durable=False, arguments={"x-message-ttl": 60_000})
    with Publisher(conn, declare=[waiting], model=str) as pub:
        pub.publish("much later", routing_key=waiting.name)
    settle(conn, quiet=0.1)
    assert conn.channel().message_count(waiting.name) == 1


def test_every_delivery_has_reached_its_subscriber(
    conn: hutch.Connection, unique_name: str
) -> None:
    q = Queue(unique_name, durable=False)
    sub = Subscriber(conn, queue=q, model=int, prefetch=1000).open()
    # another connection: its confirms say nothing about the subscriber's callback thread
    with (
        hutch.connect(f"memory://{conn.settings.memory}") as other,
        Publisher(other, model=int) as pub,
    ):
        pub.publish_many(range(500), routing_key=q.name)
    settle(conn, quiet=5.0)
    # nothing is on its way any more: the shortest wait finds all of them
    assert [m.body for m in sub.messages(timeout=0.001)] == list(range(500))
    sub.close()


def test_handled_waits_for_the_handlers(conn: hutch.Connection, unique_name: str) -> None:
    q = Queue(unique_name, durable=False)
    done: list[int] = []
    lock = threading.Lock()

    def slow(n: int) -> None:
        time.sleep(0.01)  # real work: settle must wait for it
        with lock:
            done.append(n)

    with WorkerPool(conn, queue=q, handler=slow, model=int, concurrency=2) as pool:
        pool.start()
        with Publisher(conn, declare=[q], model=int) as pub:
            for i in range(10):
                pub.publish(i, routing_key=q.name)
        settle(conn, quiet=0.0, handled=True)
        with lock:
            assert sorted(done) == list(range(10))


def test_on_rabbitmq_it_sleeps_the_window() -> None:
    # no broker needed: an amqp:// connection object that is never opened
    c = hutch.Connection("amqp://guest:guest@127.0.0.1:1/")
    started = time.monotonic()
    settle(c, quiet=0.05)
    assert time.monotonic() - started >= 0.05


@pytest.mark.parametrize(
    ("quiet", "error"),
    [
        ("1", TypeError),
        (True, TypeError),
        (-1, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
    ],
)
def test_wrong_arguments_fail_at_once(
    conn: hutch.Connection, quiet: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="settle"):
        settle(conn, quiet=quiet)  # type: ignore[arg-type]


def test_the_window_is_counted_from_the_call_not_from_each_expiry(
    conn: hutch.Connection, unique_name: str
) -> None:
    # two hops of 10 minutes each: the first falls inside a 15-minute window, the second not
    last = Queue(f"{unique_name}.last", durable=False)
    second = expiring(f"{unique_name}.second", 600, then=last)
    first = expiring(f"{unique_name}.first", 600, then=second)
    with Publisher(conn, declare=[last, second, first], model=str) as pub:
        pub.publish("hop", routing_key=first.name)
    settle(conn, quiet=900)
    ch = conn.channel()
    counts = [ch.message_count(q.name) for q in (first, second, last)]
    assert counts == [0, 1, 0]
    settle(conn, quiet=900)  # the next 15 minutes take it the rest of the way
    assert [ch.message_count(q.name) for q in (first, second, last)] == [0, 0, 1]


def test_a_retry_backoff_of_ten_minutes_is_handled_at_once(
    conn: hutch.Connection, unique_name: str
) -> None:
    calls: list[int] = []

    def flaky(n: int) -> None:
        calls.append(n)
        if len(calls) == 1:
            raise ConnectionError("the first attempt fails")

    policy = hutch.RetryPolicy(max_attempts=3, backoff=600, max_delay=600)
    q = Queue(unique_name, durable=False)
    with WorkerPool(conn, queue=q, handler=flaky, model=int, retry=policy) as pool:
        pool.start()
        pool.submit(7)
        settle(conn, quiet=601, handled=True)
        assert calls == [7, 7]
        assert pool.stats.retried == 1 and pool.stats.processed == 1
