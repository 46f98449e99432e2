"""Subscriber against a real broker: handler loop, iterator, stop, dead letters, restart."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import BaseModel

from hutch import ClosedError, Connection, Message, Publisher, Queue, Subscriber
from hutch.testing import Broker
from tests.waits import drain, settle


class Order(BaseModel):
    id: int
    item: str


def temp_queue(name: str) -> Queue:
    return Queue(name, durable=False, expires=60)


def test_handler_gets_body_and_delivery_details(conn: Connection, unique_name: str) -> None:
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, model=Order, declare=[q]) as pub:
        pub.publish(Order(id=7, item="pen"), headers={"source": "test"}, correlation_id="c-7")
    seen: list[tuple[Order, Message[Order]]] = []
    with Subscriber(conn, queue=q.name, model=Order) as sub:
        assert sub.run(lambda body, msg: seen.append((body, msg)), limit=1, timeout=5) == 1
    body, msg = seen[0]
    assert body == Order(id=7, item="pen")
    assert msg.routing_key == q.name
    assert msg.exchange == ""
    assert msg.headers == {"source": "test"}
    assert msg.correlation_id == "c-7"
    assert msg.redelivered is False
    assert conn.channel().message_count(q.name) == 0


def test_a_higher_consumer_priority_gets_every_message_while_it_has_room(
    conn: Connection, unique_name: str
) -> None:
    """``consumer_arguments`` reach the broker: ``x-priority`` 10 beats the default 0."""
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, model=int, declare=[q]) as pub:
        low = Subscriber(conn, queue=q, model=int, prefetch=5).open()
        high = Subscriber(
            conn, queue=q, model=int, prefetch=50, consumer_arguments={"x-priority": 10}
        ).open()
        try:
            for i in range(20):
                pub.publish(i)
            assert sorted(drain(conn, high)) == list(range(20))
            assert drain(conn, low) == []
        finally:
            high.close()
            low.close()


def test_stop_from_another_thread(conn: Connection, unique_name: str) -> None:
    q = temp_queue(unique_name)
    with Subscriber(conn, queue=q, model=int) as sub:
        got: list[int] = []
        t = threading.Thread(target=lambda: sub.run(got.append))
        t.start()
        with Publisher(conn, routing_key=q.name, model=int) as pub:
            for i in range(5):
                pub.publish(i)
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        sub.stop()
        t.join(5)
        assert not t.is_alive()
        assert got == [0, 1, 2, 3, 4]


def test_undecodable_and_invalid_bodies_go_to_dead_letter_queue_with_reason(
    conn: Connection, unique_name: str
) -> None:
    q = temp_queue(unique_name)
    dead = f"{unique_name}.dead"
    with Publisher(conn, routing_key=q.name, declare=[q]) as raw:
        raw.publish(b"{not json", content_type="application/json")
        raw.publish(b'{"id": "seven", "item": "pen"}', content_type="application/json")
        raw.publish(b"\x80\x04pickle", content_type="application/python-pickle")
        raw.publish(b'{"id": 1, "item": "ok"}', content_type="application/json")
    good: list[Order] = []
    with Subscriber(conn, queue=q.name, model=Order) as sub:
        # the good body comes last: the three bad ones were dead-lettered on the way to it
        assert sub.run(good.append, limit=1, timeout=10) == 1
        assert drain(conn, sub, quiet=1.0) == []  # nothing comes back (a 1 s window on RabbitMQ)
        assert sub.dead_lettered == 3
    assert good == [Order(id=1, item="ok")]
    ch = conn.channel()
    reasons = []
    for _ in range(3):
        d = ch.get(dead)
        assert d is not None
        h = d.headers
        reasons.append((h["x-hutch-error-type"], h["x-hutch-error"]))
        assert h["x-hutch-original-queue"] == q.name
        assert h["x-hutch-original-routing-key"] == q.name
        d.ack()
    assert reasons[0][0] == "DecodeError" and "JSON" in reasons[0][1]
    assert reasons[1][0] == "ValidationError" and "'id'" in reasons[1][1]
    assert reasons[2][0] == "DecodeError" and "python-pickle" in reasons[2][1]
    assert ch.get(dead) is None
    assert ch.message_count(q.name) == 0  # nothing left behind, nothing lost
    ch.delete_queue(dead)


def test_handler_exception_dead_letters_and_loop_continues(
    conn: Connection, unique_name: str
) -> None:
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, model=int, declare=[q]) as pub:
        for i in range(5):
            pub.publish(i)

    def handler(n: int) -> None:
        if n % 2:
            raise RuntimeError(f"odd {n}")

    with Subscriber(conn, queue=q.name, model=int) as sub:
        # 0, 2 and 4 handled: the loop went on after each of the two failures
        assert sub.run(handler, limit=3, timeout=10) == 3
        assert drain(conn, sub, quiet=1.0) == []  # nothing comes back (a 1 s window on RabbitMQ)
        assert sub.dead_lettered == 2
    ch = conn.channel()
    assert ch.message_count(f"{unique_name}.dead") == 2
    d = ch.get(f"{unique_name}.dead")
    assert d is not None and d.headers["x-hutch-error"] == "odd 1"
    assert d.headers["x-hutch-error-type"] == "RuntimeError"
    ch.delete_queue(f"{unique_name}.dead")


def test_iterator_acks_each_message_when_moving_on(conn: Connection, unique_name: str) -> None:
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, model=str, declare=[q]) as pub:
        for s in ("a", "b", "c"):
            pub.publish(s)
    with Subscriber(conn, queue=q.name, model=str, prefetch=1) as sub:
        it = sub.messages(timeout=2)
        assert next(it).body == "a"
        assert next(it).body == "b"
        it.close()
    # "a" and "b" were acked; "c" was prefetched at most and is requeued on close
    with Subscriber(conn, queue=q.name, model=str) as sub:
        assert drain(conn, sub, quiet=1.0) == ["c"]


def test_unacked_messages_are_requeued_on_close(conn: Connection, unique_name: str) -> None:
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, model=int, declare=[q]) as pub:
        for i in range(10):
            pub.publish(i)
    sub = Subscriber(conn, queue=q.name, model=int, prefetch=10).open()
    settle(conn, 0.3)  # let the broker push all 10 into the local buffer
    assert sub.get(timeout=2) is not None
    sub.close()
    with pytest.raises(ClosedError):
        sub.open()
    ch = conn.channel()
    deadline = time.monotonic() + 5
    while ch.message_count(q.name) != 9 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ch.message_count(q.name) == 9


def test_wrong_subscriber_arguments(conn: Connection) -> None:
    with pytest.raises(ValueError, match="exchange"):
        Subscriber(conn)
    with pytest.raises(ValueError, match="prefetch"):
        Subscriber(conn, queue="q", prefetch=0)
    with pytest.raises(ValueError, match="headers exchange"):
        from hutch import Exchange

        Subscriber(conn, exchange=Exchange("t", "topic"), headers={"a": 1})
    with pytest.raises(TypeError):
        Subscriber(conn, queue=3)  # type: ignore[call-overload]


@pytest.mark.rabbitmq_only("fault injection: restarts a real broker node")
def test_persistent_message_survives_broker_restart(
    controllable_broker: Broker, unique_name: str
) -> None:
    q = Queue(unique_name, durable=True)
    with (
        Connection(controllable_broker.url) as c,
        Publisher(c, routing_key=q.name, model=Order, declare=[q]) as pub,
    ):
        pub.publish(Order(id=42, item="survivor"))
        pub.publish(Order(id=43, item="transient"), delivery_mode=1)
    controllable_broker.restart()
    with Connection(controllable_broker.url) as c:
        with Subscriber(c, queue=q.name, model=Order) as sub:
            bodies = [m.body for m in sub.messages(timeout=1)]
        c.channel().delete_queue(q.name)
    assert bodies == [Order(id=42, item="survivor")]


def test_failed_dead_lettering_neither_loses_nor_loops_hot(
    conn: Connection, unique_name: str
) -> None:
    q = temp_queue(unique_name)
    # a dead-letter queue that exists with other settings: hutch cannot declare it (406)
    blocker = Queue(f"{unique_name}.dead", durable=False, expires=60, max_length=7)
    ch = conn.channel()
    ch.declare([q, blocker])
    with Publisher(conn, routing_key=q.name, declare=[q]) as raw:
        raw.publish(b"{broken", content_type="application/json")
    attempts: list[bool] = []

    def on_bad(body: int) -> None:  # never called: the body is undecodable
        attempts.append(True)

    # The window in which the held message must not come back. The pause is the client's
    # own timer on the connection's clock: on the memory broker's virtual time the window
    # and the pause are deadlines that time jumps to.
    timers_before = {t for t in threading.enumerate() if t.name.startswith("hutch-requeue-")}
    with Subscriber(conn, queue=q.name, model=int) as sub:
        sub.run(on_bad, timeout=2.0)
        # one try, then the message is held for REQUEUE_DELAY seconds, not redelivered hot;
        # the counters say so: no dead letter was placed, the message was requeued
        assert (sub.dead_lettered, sub.requeued) == (0, 1)
    assert attempts == []
    # closed during the pause: its requeue timer is cancelled, nothing of it runs after
    # close() (the closed channel gave the held message back)
    leftover = [
        t
        for t in threading.enumerate()
        if t.name.startswith("hutch-requeue-") and t not in timers_before and t.is_alive()
    ]
    assert leftover == []
    deadline = time.monotonic() + 10
    while ch.message_count(q.name) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ch.message_count(q.name) == 1  # requeued after the pause: not lost
    ch.delete_queue(blocker.name)
    ch.delete_queue(q.name)


def test_a_message_that_already_waits_is_taken_however_short_the_timeout(
    conn: Connection, unique_name: str
) -> None:
    # The deadline of a 1 ns timeout has passed before the first look at the buffer, as a
    # 1 ms one has on a loaded machine (where tests/waits.drain met it): what was delivered
    # is still returned, and only then does the call give up.
    q = temp_queue(unique_name)
    with (
        Subscriber(conn, queue=q, model=int) as sub,
        Publisher(conn, routing_key=q.name, model=int) as pub,
    ):
        pub.publish(1)
        pub.publish(2)
        settle(conn)  # both delivered to the subscriber
        assert [m.body for m in sub.messages(timeout=1e-9)] == [1, 2]
        assert sub.get(timeout=1e-9) is None
    conn.channel().delete_queue(q.name)
