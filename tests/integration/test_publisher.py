"""Publisher against a real broker: confirms, mandatory, properties, batches, threads."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

from hutch import (
    ClosedError,
    Connection,
    Exchange,
    MessageTooLarge,
    Nacked,
    NotFound,
    Publisher,
    Queue,
    Subscriber,
    Unroutable,
)
from hutch._amqp import OutgoingMessage, stuck
from tests.waits import drain


class Order(BaseModel):
    id: int
    item: str


def temp_queue(name: str) -> Queue:
    return Queue(name, durable=False, auto_delete=False, expires=60)


def test_confirmed_persistent_publish_with_generated_id(conn: Connection, unique_name: str) -> None:
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, model=Order, declare=[q]) as pub:
        mid = pub.publish(Order(id=1, item="book"))
    ch = conn.channel()
    d = ch.get(q.name)
    assert d is not None
    assert d.properties.delivery_mode == 2
    assert d.properties.message_id == mid and len(mid) == 32
    assert d.properties.content_type == "application/json"
    assert Order.model_validate_json(d.body) == Order(id=1, item="book")
    ch.delete_queue(q.name)


def test_all_fourteen_properties_round_trip(conn: Connection, unique_name: str) -> None:
    q = temp_queue(unique_name)
    ts = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    props: dict[str, Any] = {
        "content_encoding": "identity",
        "delivery_mode": 1,
        "priority": 5,
        "correlation_id": "corr-1",
        "reply_to": "replies",
        "expiration": "60000",
        "message_id": "mid-1",
        "timestamp": ts,
        "type": "order.created",
        "user_id": "guest",
        "app_id": "shop",
        "cluster_id": "c1",
    }
    with Publisher(conn, routing_key=q.name, declare=[q]) as pub:
        pub.publish(
            b"raw", headers={"h": "v", "n": 3}, content_type="application/x-custom", **props
        )
    with Subscriber(conn, queue=q.name) as sub:
        msg = sub.get(timeout=5)
    assert msg is not None
    assert msg.body == b"raw"
    p = msg.properties
    assert p.content_type == "application/x-custom"
    assert dict(p.headers or {}) == {"h": "v", "n": 3}
    for key, value in props.items():
        assert getattr(p, key) == value, key
    conn.channel().delete_queue(q.name)


def test_unknown_property_fails_at_once(conn: Connection) -> None:
    pub = Publisher(conn, routing_key="x")
    with pytest.raises(TypeError, match="unknown message properties"):
        pub.publish(b"x", colour="red")
    with pytest.raises(ValueError, match="expiration"):
        pub.publish(b"x", expiration="soon")


def test_expiration_from_timedelta(conn: Connection, unique_name: str) -> None:
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, declare=[q]) as pub:
        pub.publish(b"x", expiration=dt.timedelta(seconds=30))
    d = conn.channel().get(q.name)
    assert d is not None and d.properties.expiration == "30000"


def test_mandatory_unroutable_raises(conn: Connection, unique_name: str) -> None:
    with Publisher(conn, routing_key=f"{unique_name}-nobody", mandatory=True) as pub:
        with pytest.raises(Unroutable) as info:
            pub.publish(b"lost?")
        assert info.value.reply_code == 312
        assert info.value.routing_key == f"{unique_name}-nobody"
        # the publisher stays usable
        q = temp_queue(unique_name)
        conn.channel().declare([q])
        pub.publish(b"found", routing_key=q.name)
    conn.channel().delete_queue(unique_name)


def test_without_mandatory_unroutable_is_confirmed(conn: Connection, unique_name: str) -> None:
    with Publisher(conn, routing_key=f"{unique_name}-nobody") as pub:
        assert pub.publish(b"dropped by broker")


def test_publish_to_missing_exchange_raises_not_found(conn: Connection, unique_name: str) -> None:
    with Publisher(conn, exchange=f"{unique_name}-missing") as pub:
        with pytest.raises(NotFound):
            pub.publish(b"x")
        with pytest.raises(NotFound):
            pub.publish(b"again: channel was reopened")


def test_publish_many_reports_per_message(conn: Connection, unique_name: str) -> None:
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, model=int, declare=[q]) as pub:
        result = pub.publish_many(range(1000))
        assert result.ok and result.confirmed == 1000
        assert len(set(result.message_ids)) == 1000
    assert conn.channel().message_count(q.name) == 1000
    with Publisher(conn, routing_key=f"{unique_name}-nobody", mandatory=True, model=int) as pub:
        bad = pub.publish_many([1, 2, 3])
        assert not bad.ok
        assert [i for i, _ in bad.failed] == [0, 1, 2]
        assert all(isinstance(e, Unroutable) for _, e in bad.failed)
        with pytest.raises(Unroutable):
            bad.raise_for_failures()
    conn.channel().delete_queue(q.name)


def test_confirm_batch_context_streams_and_settles_every_message(
    conn: Connection, unique_name: str
) -> None:
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, model=Order, declare=[q]) as pub:
        with pub.batch(max_in_flight=50) as batch:  # a window far smaller than the batch
            ids = [batch.publish(Order(id=i, item="x")) for i in range(2000)]
        assert batch.result is not None
        assert batch.result.ok and batch.result.confirmed == 2000
        assert batch.result.message_ids == ids and len(set(ids)) == 2000
        with pytest.raises(ClosedError, match="with block"):
            batch.publish(Order(id=0, item="late"))
    assert conn.channel().message_count(q.name) == 2000
    first = conn.channel().get(q.name)
    assert first is not None and first.properties.message_id == ids[0]
    conn.channel().delete_queue(q.name)


def test_confirm_batch_reports_unroutable_messages_by_index(
    conn: Connection, unique_name: str
) -> None:
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, mandatory=True, model=int, declare=[q]) as pub:
        with pub.batch() as batch:
            for i in range(500):
                batch.publish(i, routing_key=q.name if i % 100 else f"{unique_name}-nobody")
        assert batch.result is not None and not batch.result.ok
        assert [i for i, _ in batch.result.failed] == [0, 100, 200, 300, 400]
        assert all(isinstance(e, Unroutable) for _, e in batch.result.failed)
        assert batch.result.confirmed == 495
    assert conn.channel().message_count(q.name) == 495
    conn.channel().delete_queue(q.name)


def test_confirm_batch_arguments_fail_at_once(conn: Connection, unique_name: str) -> None:
    with Publisher(conn, routing_key=unique_name, model=int) as pub:
        with pytest.raises(ValueError, match="max_in_flight"):
            pub.batch(max_in_flight=0)
        with pytest.raises(TypeError, match="message_id"):
            pub.batch(message_id="x")
        with pytest.raises(TypeError, match="unknown message properties"):
            pub.batch(colour="red")
        with pytest.raises(ClosedError):
            pub.batch().publish(1)  # not entered


@pytest.mark.rabbitmq_only("which thread reads the broker's confirms is the pika driver's protocol")
def test_confirmed_publish_reads_its_confirm_on_the_calling_thread(
    conn: Connection, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No hand-over to the I/O thread and back (docs/threading.md); publish_async is
    # confirmed by whichever thread drives the connection, usually the I/O thread.
    settlers: list[threading.Thread] = []
    original = OutgoingMessage.succeed

    def spy(self: OutgoingMessage) -> None:
        settlers.append(threading.current_thread())
        original(self)

    monkeypatch.setattr(OutgoingMessage, "succeed", spy)
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, model=int, declare=[q]) as pub:
        for i in range(20):
            pub.publish(i)
        me = threading.current_thread()
        # the I/O thread may hold the connection at the odd moment: then it reads that one
        assert sum(t is me for t in settlers) >= 15, [t.name for t in settlers]
        settlers.clear()
        pub.publish_async(20).result(10)
        assert settlers and settlers[0] is not me
    conn.channel().delete_queue(q.name)


def test_unencodable_messages_fail_cleanly_and_the_publisher_goes_on(
    conn: Connection, unique_name: str
) -> None:
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, model=int, declare=[q]) as pub:
        with pytest.raises(ValueError, match="at most 255"):
            pub.publish(1, routing_key="k" * 256)
        # checked before anything is sent: the field named, what is allowed said
        with pytest.raises(TypeError, match=r"headers\['when'\] is a object.*allowed"):
            pub.publish(2, headers={"when": object()})  # type: ignore[dict-item]
        pub.publish(3)
    assert conn.channel().message_count(q.name) == 1
    conn.channel().delete_queue(q.name)


def test_many_threads_one_publisher_every_message_counted(
    conn: Connection, unique_name: str
) -> None:
    q = temp_queue(unique_name)
    threads, per_thread = 8, 250
    with Publisher(conn, routing_key=q.name, model=Order, declare=[q]) as pub:

        def work(t: int) -> None:
            for i in range(per_thread):
                pub.publish(Order(id=t * per_thread + i, item=f"t{t}"))

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    total = threads * per_thread
    assert conn.channel().message_count(q.name) == total  # every publish was confirmed
    with Subscriber(conn, queue=q.name, model=Order, prefetch=500) as sub:
        seen = [msg.body.id for msg in sub.messages(timeout=10, limit=total)]
        seen += [order.id for order in drain(conn, sub, quiet=2.0)]  # no extra copies
    assert sorted(seen) == list(range(total))
    conn.channel().delete_queue(q.name)


def test_unconfirmed_mode_delivers_everything_after_flush(
    conn: Connection, unique_name: str
) -> None:
    q = temp_queue(unique_name)
    with Publisher(conn, routing_key=q.name, confirm=False, persistent=False, declare=[q]) as pub:
        for i in range(3000):
            pub.publish(str(i).encode())
        pub.flush()
    ch = conn.channel()
    for _ in range(50):
        if ch.message_count(q.name) == 3000:
            break
        threading.Event().wait(0.1)
    assert ch.message_count(q.name) == 3000
    ch.delete_queue(q.name)


def test_oversized_body_refused_before_sending(amqp_url: str, unique_name: str) -> None:
    with Connection(amqp_url, max_message_size=1024) as small:
        with Publisher(small, routing_key=unique_name) as pub:
            with pytest.raises(MessageTooLarge) as info:
                pub.publish(b"x" * 1025)
            assert (info.value.size, info.value.limit) == (1025, 1024)
            pub.publish(b"x" * 1024)


def test_use_after_close_raises(conn: Connection) -> None:
    pub = Publisher(conn, exchange=Exchange("amq.fanout"))
    pub.publish(b"x")
    pub.close()
    pub.close()  # idempotent
    with pytest.raises(ClosedError):
        pub.publish(b"y")


def test_publisher_with_url_owns_its_connection(amqp_url: str, unique_name: str) -> None:
    q = temp_queue(unique_name)
    with Publisher(amqp_url, routing_key=q.name, declare=[q], model=str) as pub:
        pub.publish("hello")
    with Subscriber(amqp_url, queue=q.name, model=str) as sub:
        msg = sub.get(timeout=5)
        assert msg is not None and msg.body == "hello"
    with Connection(amqp_url) as c:
        c.channel().delete_queue(q.name)


def test_wrong_arguments_fail_at_once(conn: Connection) -> None:
    with pytest.raises(TypeError):
        Publisher(conn, exchange=3)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="mandatory"):
        Publisher(conn, mandatory=True, confirm=False)
    with pytest.raises(ValueError, match="scheme"):
        Publisher("not-a-connection-or-url", routing_key="x")
    with pytest.raises(TypeError):
        Publisher(42)  # type: ignore[call-overload]


@pytest.mark.rabbitmq_only(
    "a workaround for RabbitMQ 3.10's quorum-queue client, which can nack every publish of "
    "a channel for good; it reopens the pika channel"
)
def test_a_channel_that_only_nacks_for_seconds_is_reopened_and_publishing_goes_on(
    conn: Connection,
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A full reject-publish queue nacks every publish, as a stuck quorum queue client does
    # (the failover test in test_cluster.py meets that one); after STUCK_SECONDS of nothing
    # but nacks the publisher's channel is replaced, and the next publishes go out on it.
    monkeypatch.setattr(stuck, "STUCK_SECONDS", 0.5)  # two seconds in hutch
    full = Queue(unique_name, durable=False, max_length=0, overflow="reject-publish")
    other = temp_queue(f"{unique_name}.other")
    with Publisher(conn, routing_key=full.name, model=int, declare=[full, other]) as pub:
        channel: Any = pub._ensure_channel()
        nacked = 0
        deadline = time.monotonic() + 10
        while channel.reopened_after_nacks == 0 and time.monotonic() < deadline:
            with pytest.raises(Nacked):
                pub.publish(nacked)
            nacked += 1
            time.sleep(0.01)
        assert channel.reopened_after_nacks == 1, f"not reopened after {nacked} nacks"
        assert nacked >= stuck.STUCK_NACKS
        assert any("reopening the channel" in r.getMessage() for r in caplog.records)
        pub.publish(1, routing_key=other.name)
        with pytest.raises(Nacked):
            pub.publish(2)
    assert conn.channel().message_count(other.name) == 1
    conn.channel().delete_queue(full.name)
    conn.channel().delete_queue(other.name)


@pytest.mark.rabbitmq_only(
    "a workaround for RabbitMQ 3.10's quorum-queue client (see the test above); it reopens "
    "the pika channel"
)
def test_publishes_in_flight_when_a_nacking_channel_is_reopened_are_all_settled(
    conn: Connection, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stuck, "STUCK_SECONDS", 0.5)
    full = Queue(unique_name, durable=False, max_length=0, overflow="reject-publish")
    with Publisher(conn, routing_key=full.name, model=int, declare=[full]) as pub:
        channel: Any = pub._ensure_channel()
        futures = []
        deadline = time.monotonic() + 10
        while channel.reopened_after_nacks < 2 and time.monotonic() < deadline:
            futures += [pub.publish_async(i) for i in range(50)]
            time.sleep(0.005)
        assert channel.reopened_after_nacks >= 2
        outcomes = {type(f.exception(30)).__name__ for f in futures}
    # every message was refused by the queue, none lost with the old channel
    assert outcomes == {"Nacked"}, outcomes
    conn.channel().delete_queue(full.name)
