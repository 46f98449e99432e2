"""Connection model against a real broker: errors, 406, heartbeats and the I/O thread."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from pydantic import BaseModel

from hutch import (
    AuthenticationError,
    ConnectError,
    Connection,
    Exchange,
    PreconditionFailed,
    Publisher,
    Queue,
    Subscriber,
    connect,
)
from hutch.testing import Broker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.rabbitmq_only("checks the amqp:// URL with its masked password in repr")
def test_connect_and_close_idempotent(amqp_url: str) -> None:
    conn = connect(amqp_url, connection_name="idempotent")
    assert conn.is_open
    assert "guest:***@" in repr(conn)
    conn.close()
    conn.close()
    assert not conn.is_open


def test_unreachable_host_is_a_connect_error() -> None:
    port = _free_port()
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}") as info:
        connect(f"amqp://guest:guest@127.0.0.1:{port}/", connect_timeout=2)
    assert not isinstance(info.value, AuthenticationError)


@pytest.mark.rabbitmq_only(
    "RabbitMQ's check of amqp:// credentials (memory:// has no users; the fixture starts a node)"
)
def test_wrong_password_is_an_authentication_error(hutch_broker: Broker) -> None:
    url = hutch_broker.url.replace("guest:guest@", "guest:wrong-secret@")
    with pytest.raises(AuthenticationError) as info:
        connect(url)
    assert "wrong-secret" not in str(info.value)


def test_redeclare_with_other_arguments_names_entity_and_difference(
    conn: Connection, unique_name: str
) -> None:
    ch = conn.channel()
    ch.declare([Queue(unique_name, durable=True)])
    with pytest.raises(PreconditionFailed) as info:
        ch.declare([Queue(unique_name, durable=False)])
    assert info.value.reply_code == 406
    assert unique_name in info.value.entity
    assert "durable" in info.value.differences
    with pytest.raises(PreconditionFailed) as info2:
        ch.declare([Exchange(unique_name + "-x", "topic", auto_delete=True)])
        ch.declare([Exchange(unique_name + "-x", "fanout", auto_delete=True)])
    assert "exchange" in str(info2.value)
    # the connection and even the same channel stay usable
    ch.declare([Queue(unique_name, durable=True)])
    with Publisher(conn, routing_key=unique_name) as pub:
        pub.publish(b"still fine")
    assert ch.message_count(unique_name) == 1
    ch.delete_queue(unique_name)
    assert conn.recoveries == 0


class Tick(BaseModel):
    n: int


@pytest.mark.rabbitmq_only("AMQP heartbeats on a real socket")
def test_idle_publisher_past_three_heartbeats_still_publishes(
    hutch_broker: Broker, unique_name: str
) -> None:
    with Connection(hutch_broker.url, heartbeat=1, connection_name=unique_name) as conn:
        q = Queue(unique_name, durable=False, expires=60)
        with Publisher(conn, routing_key=q.name, model=Tick, declare=[q]) as pub:
            pub.publish(Tick(n=1))
            time.sleep(3.5)  # > 3x heartbeat: pika alone would have been dropped by the broker
            pub.publish(Tick(n=2))
        assert conn.recoveries == 0  # not lost and silently recovered: never lost
        if hutch_broker.supports_control:
            assert unique_name in hutch_broker.list_connection_names()
        assert conn.channel().message_count(q.name) == 2


@pytest.mark.rabbitmq_only("AMQP heartbeats on a real socket")
def test_long_handler_past_three_heartbeats_keeps_connection(
    hutch_broker: Broker, unique_name: str
) -> None:
    with Connection(hutch_broker.url, heartbeat=1, connection_name=unique_name) as conn:
        q = Queue(unique_name, durable=False, expires=60)
        with Publisher(conn, routing_key=q.name, model=Tick, declare=[q]) as pub:
            pub.publish(Tick(n=1))
            pub.publish(Tick(n=2))
        handled: list[int] = []

        def slow(t: Tick) -> None:
            time.sleep(3.5)
            handled.append(t.n)

        with Subscriber(conn, queue=q.name, model=Tick, prefetch=1) as sub:
            assert sub.run(slow, limit=2, timeout=20) == 2
        assert handled == [1, 2]
        assert conn.recoveries == 0
        assert conn.channel().message_count(q.name) == 0  # both acked on the original channel


def test_publishing_from_many_threads_while_consuming(conn: Connection, unique_name: str) -> None:
    q = Queue(unique_name, durable=False, expires=60)
    got: list[int] = []
    with Subscriber(conn, queue=q, model=int) as sub:
        t = threading.Thread(target=lambda: sub.run(got.append, limit=400, timeout=10))
        t.start()
        with Publisher(conn, routing_key=q.name, model=int) as pub:
            ths = [
                threading.Thread(target=lambda k=k: [pub.publish(k * 100 + i) for i in range(100)])
                for k in range(4)
            ]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
        t.join(20)
    assert sorted(got) == list(range(400))
