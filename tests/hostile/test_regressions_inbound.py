"""Issue 10, rows 1-3: one inbound message never takes down a consumer or its connection.

Each test sends what a client we did not write sent (raw pika, on a connection of its own)
and checks that the message is dead-lettered with the reason (or, for an RPC reply, that
only that call fails with an ``RpcError``), that the consumer goes on, and that a publisher
sharing the consumer's connection still publishes.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

import pika
import pytest

import hutch
from hutch import Connection, InvalidReply, Publisher, RpcClient, Subscriber, WorkerPool
from tests.hostile.producer import RawProducer
from tests.hostile.strategies import RawField
from tests.reliability import wait_until

pytestmark = pytest.mark.timeout(120)

NANOS = 1_700_000_000_123_456_789  # what Go's time.Now().UnixNano() gives
# an AMQP timestamp in year 36812: RabbitMQ passes it on, pika's decoder raises on it
FAR_FUTURE = RawField(b"T", struct.pack(">Q", 2**40))
FAR_FUTURE_TABLE = b"\x02okI\x00\x00\x00\x05\x04whenT" + struct.pack(">Q", 2**40)


def _dead(raw: RawProducer, queue: str, count: int) -> list[tuple[Any, bytes]]:
    got: list[tuple[Any, bytes]] = []

    def enough() -> bool:
        got.extend(raw.drain(queue))
        return len(got) >= count

    wait_until(enough, 15)
    return got


def table(**values: object) -> Any:
    """A headers table for pika that may hold RawField values (see RawProducer)."""
    return values


def _still_publishes(conn: Connection, queue: str) -> None:
    assert conn.is_open
    with Publisher(conn, routing_key=queue) as pub:
        pub.publish(b"from a publisher sharing the connection")


@pytest.fixture
def queues(raw_producer: RawProducer, unique_name: str) -> Iterator[tuple[str, str]]:
    work, dead = unique_name, f"{unique_name}.dead"
    ch = raw_producer.channel()
    ch.queue_declare(work, durable=True)  # as a WorkerPool declares it
    yield work, dead
    ch = raw_producer.channel()
    ch.queue_delete(work)
    ch.queue_delete(dead)


def _run_subscriber(
    conn: Connection, queue: str, raw: RawProducer, sent: list[pika.BasicProperties]
) -> tuple[list[bytes], list[tuple[Any, bytes]]]:
    handled: list[bytes] = []
    errors: list[BaseException] = []
    sub = Subscriber(conn, queue=queue, model=bytes)

    def run() -> None:
        try:
            sub.run(handled.append)
        except BaseException as exc:  # the consumer must stay up: recorded, asserted below
            errors.append(exc)

    with sub:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        for i, props in enumerate(sent):
            assert raw.publish(queue, f"hostile-{i}".encode(), props)
        assert raw.publish(queue, b"canary", pika.BasicProperties())
        assert wait_until(lambda: b"canary" in handled, 15), (handled, errors)
        _still_publishes(conn, queue)
        assert wait_until(lambda: b"from a publisher sharing the connection" in handled, 10)
        assert thread.is_alive() and not errors, errors
        sub.stop()
        thread.join(10)
    return handled, _dead(raw, f"{queue}.dead", len(sent))


def test_row_nanosecond_timestamp_subscriber(
    conn: Connection, raw_producer: RawProducer, queues: tuple[str, str]
) -> None:
    work, _ = queues
    handled, dead = _run_subscriber(
        conn, work, raw_producer, [pika.BasicProperties(timestamp=NANOS, headers={"a": 1})]
    )
    assert b"hostile-0" not in handled
    [(props, body)] = dead
    assert body == b"hostile-0"
    assert "timestamp" in props.headers["x-hutch-error"]
    assert props.headers["x-hutch-raw-timestamp"] == str(NANOS)  # nothing lost
    assert props.headers["a"] == 1


def test_row_nanosecond_timestamp_worker_pool(
    conn: Connection, raw_producer: RawProducer, queues: tuple[str, str]
) -> None:
    work, dead_queue = queues
    handled: list[bytes] = []
    pool = WorkerPool(conn, queue=work, handler=handled.append, model=bytes, concurrency=1)
    with pool.start():
        assert raw_producer.publish(work, b"nanos", pika.BasicProperties(timestamp=NANOS))
        assert raw_producer.publish(work, b"canary", pika.BasicProperties())
        assert wait_until(lambda: b"canary" in handled, 15), pool.stats
        stats = pool.stats
        # dead-lettered once: not requeued for ever, not failed over and over
        assert (stats.dead_lettered, stats.requeued, stats.failed) == (1, 0, 1), stats
        _still_publishes(conn, work)
        assert wait_until(lambda: len(handled) == 2, 10)
    [(props, body)] = _dead(raw_producer, dead_queue, 1)
    assert body == b"nanos" and "timestamp" in props.headers["x-hutch-error"]
    assert props.headers["x-hutch-raw-timestamp"] == str(NANOS)


def test_row_undecodable_header_subscriber(
    conn: Connection, raw_producer: RawProducer, queues: tuple[str, str]
) -> None:
    work, _ = queues
    # twice: a message that killed the connection would kill it again on redelivery
    sent = [pika.BasicProperties(headers=table(ok=5, when=FAR_FUTURE), message_id="m")] * 2
    handled, dead = _run_subscriber(conn, work, raw_producer, sent)
    assert not [h for h in handled if h.startswith(b"hostile")]
    assert [body for _, body in dead] == [b"hostile-0", b"hostile-1"]
    for props, _ in dead:
        assert "headers table cannot be decoded" in props.headers["x-hutch-error"]
        assert "year" in props.headers["x-hutch-error"]
        # the bad table is stripped but kept byte for byte; the other properties stay
        assert props.headers["x-hutch-raw-headers"] == FAR_FUTURE_TABLE
        assert "when" not in props.headers and props.message_id == "m"
    assert conn.io.failure is None


def test_row_undecodable_header_worker_pool(
    conn: Connection, raw_producer: RawProducer, queues: tuple[str, str]
) -> None:
    work, dead_queue = queues
    handled: list[bytes] = []
    pool = WorkerPool(conn, queue=work, handler=handled.append, model=bytes, concurrency=2)
    with pool.start():
        for _ in range(3):
            assert raw_producer.publish(
                work, b"bad", pika.BasicProperties(headers=table(t=FAR_FUTURE))
            )
        assert raw_producer.publish(work, b"canary", pika.BasicProperties())
        assert wait_until(lambda: pool.stats.dead_lettered == 3 and b"canary" in handled, 15), (
            pool.stats
        )
        _still_publishes(conn, work)
        assert wait_until(lambda: len(handled) == 2, 10)
    dead = _dead(raw_producer, dead_queue, 3)
    assert [body for _, body in dead] == [b"bad"] * 3
    assert all(p.headers["x-hutch-error-type"] == "DecodeError" for p, _ in dead)


class Texts(Protocol):
    def greet(self, name: str) -> str: ...


def _foreign_server(
    url: str, queue: str, replies: list[tuple[bytes, str]], stop: threading.Event
) -> None:
    """A raw pika RPC server answering each request with the next (body, content type)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.queue_declare(queue, auto_delete=True)
        ready.set()
        while not stop.is_set():
            method, props, _body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                time.sleep(0.01)
                continue
            if props is None or not isinstance(props.reply_to, str):
                continue  # not a request: the test's closing publish ("still publishing")
            body, content_type = replies.pop(0)
            ch.basic_publish(
                "",
                props.reply_to,
                body,
                pika.BasicProperties(
                    correlation_id=props.correlation_id, content_type=content_type
                ),
            )
    finally:
        conn.close()


ready = threading.Event()


def test_row_rpc_reply_invalid_utf8_stub(conn: Connection, amqp_url: str, unique_name: str) -> None:
    replies = [(b"\xff\xfe not UTF-8", "text/plain"), (b"hello", "text/plain")]
    stop = threading.Event()
    ready.clear()
    server = threading.Thread(
        target=_foreign_server, args=(amqp_url, unique_name, replies, stop), daemon=True
    )
    server.start()
    try:
        assert ready.wait(10)
        with RpcClient(conn, queue=unique_name, timeout=5) as client:
            stub = client.stub(Texts)
            started = time.monotonic()
            with pytest.raises(InvalidReply) as info:
                stub.greet("x")
            assert time.monotonic() - started < 4  # at once, not at the deadline
            assert isinstance(info.value, hutch.RpcError)
            assert "UnicodeDecodeError" in info.value.reason and info.value.procedure == "greet"
            # only that call failed: the connection and the client go on
            assert stub.greet("y") == "hello"
        assert conn.io.failure is None
        with Publisher(conn, routing_key=unique_name) as pub:
            pub.publish(b"still publishing")
    finally:
        stop.set()
        server.join(10)


def test_invalid_reply_is_exported() -> None:
    assert "InvalidReply" in hutch.__all__
    err: Any = InvalidReply("bad bytes", procedure="p")
    assert isinstance(err, hutch.RpcError) and "bad bytes" in str(err)
