"""The memory:// backend under the patterns: no RabbitMQ needed (the broker is in-process).

The full proof is the integration suite run with ``--hutch-broker=memory``; these check
the wiring (URL, fixture, errors, what is refused) in milliseconds.
"""

from __future__ import annotations

import datetime
import threading
import time
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hutch
from hutch import (
    Connection,
    ConnectionSettings,
    NotFound,
    PreconditionFailed,
    Publisher,
    Queue,
    RpcClient,
    RpcServer,
    Subscriber,
    Unroutable,
    WorkerPool,
)
from hutch._amqp import Delivery
from hutch._topology import FieldValue

pytestmark = pytest.mark.timeout(30)

_names = st.text(
    st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="-_."),
    max_size=20,
)


@settings(max_examples=40, deadline=None)
@given(name=_names, vhost=st.sampled_from(["", "/", "v1", "a b"]))
def test_memory_urls_name_a_broker_and_a_vhost(name: str, vhost: str) -> None:
    from urllib.parse import quote

    url = f"memory://{name}/{quote(vhost, safe='')}" if vhost else f"memory://{name}"
    s = ConnectionSettings.from_url(url)
    assert s.memory == name
    assert s.vhost == (vhost or "/")
    assert s.tls is None
    assert repr(s).startswith("ConnectionSettings(memory://")


@pytest.mark.parametrize(
    "url",
    ["memory://guest:secret@x", ["memory://a", "memory://b"], ["amqp://h", "memory://a"]],
)
def test_memory_urls_refuse_credentials_and_clusters(url: str | list[str]) -> None:
    with pytest.raises(ValueError, match="memory://") as info:
        ConnectionSettings.from_url(url)
    assert "secret" not in str(info.value)


def test_publish_and_subscribe_in_milliseconds(hutch_memory_connection: Connection) -> None:
    conn = hutch_memory_connection
    q = Queue("jobs")
    start = time.perf_counter()
    with Publisher(conn, routing_key="jobs", model=int, declare=[q]) as pub:
        for i in range(50):
            pub.publish(i)
    with Subscriber(conn, queue=q, model=int) as sub:
        got = [m.body for m in sub.messages(timeout=1, limit=50)]
    assert got == list(range(50))
    assert time.perf_counter() - start < 2.0


def test_header_values_arrive_with_rabbitmqs_types(hutch_memory_connection: Connection) -> None:
    # through pika's encoding and decoding, as a RabbitMQ consumer sees them
    conn = hutch_memory_connection
    q = Queue("typed")
    headers: dict[str, FieldValue] = {
        "b": b"raw",
        "n": 2**40,
        "l": [1, "x"],
        # allowed at run time (see Publisher); AMQP carries whole seconds, decoded as UTC
        "t": cast(FieldValue, datetime.datetime(2024, 1, 2, 3, 4, 5, 678000)),
        "flag": True,
    }
    with Publisher(conn, routing_key="typed", declare=[q]) as pub:
        pub.publish(b"x", headers=headers)
    with Subscriber(conn, queue=q) as sub:
        message = sub.get(timeout=1)
    assert message is not None
    got = message.properties.headers or {}
    assert got["b"] == b"raw"
    assert (got["n"], got["l"], got["flag"]) == (2**40, [1, "x"], True)
    assert got["t"] == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


def test_unroutable_not_found_and_inequivalent_raise_hutchs_errors(
    hutch_memory_connection: Connection,
) -> None:
    conn = hutch_memory_connection
    with Publisher(conn, routing_key="nobody", mandatory=True) as pub:
        with pytest.raises(Unroutable) as info:
            pub.publish(b"x")
    assert info.value.reply_code == 312
    ch = conn.channel()
    assert ch.exists("queue", "missing") is False
    with pytest.raises(NotFound):
        ch.message_count("missing")
    ch.declare([Queue("q", durable=True)])
    with pytest.raises(PreconditionFailed) as refused:
        ch.declare([Queue("q", durable=False)])
    assert "durable" in str(refused.value)
    # the channel goes on after the broker closed it, as on RabbitMQ
    assert ch.message_count("q") == 0


def test_rpc_with_direct_reply_to(hutch_memory_connection: Connection) -> None:
    conn = hutch_memory_connection
    server = RpcServer(conn, queue="calc")

    @server.procedure
    def add(x: int, y: int) -> int:
        return x + y

    # consuming once start() returns: a call made before the thread had declared the
    # queue came back 312 NO_ROUTE on a loaded CI run
    server.start()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with RpcClient(conn, queue="calc") as client:
            assert [client.call("add", i, 1, timeout=5) for i in range(5)] == [1, 2, 3, 4, 5]
    finally:
        server.stop()
        thread.join(5)


def test_worker_processes_are_refused_on_memory(hutch_memory_connection: Connection) -> None:
    with pytest.raises(ValueError, match="processes=True needs RabbitMQ"):
        WorkerPool(hutch_memory_connection, queue="jobs", handler=print, processes=True)


def test_named_brokers_are_separate() -> None:
    from hutch._memory import forget_broker

    try:
        with hutch.connect("memory://one") as a, hutch.connect("memory://two") as b:
            a.channel().declare([Queue("only-in-one")])
            assert a.channel().exists("queue", "only-in-one")
            assert not b.channel().exists("queue", "only-in-one")
    finally:  # a failed assertion must not leave the brokers to later tests
        forget_broker("one")
        forget_broker("two")


def test_a_cancel_returns_after_every_delivery_sent_before_it(
    hutch_memory_connection: Connection,
) -> None:
    # As after RabbitMQ's cancel-ok: the consumer has had every message the broker sent it
    # (a worker pool that stops relies on it to requeue all it prefetched, and count them)
    conn = hutch_memory_connection
    ch = conn.channel()
    ch.declare([Queue("jobs", durable=False)])
    first_in_hand = threading.Event()
    release = threading.Event()
    got: list[bytes] = []

    def on_message(delivery: Delivery) -> None:
        if not got:
            first_in_hand.set()
            release.wait(10)  # the callback thread is busy: the rest wait behind this one
        got.append(delivery.body)

    tag = ch.consume("jobs", on_message)
    with Publisher(conn, routing_key="jobs", model=bytes) as pub:
        for i in range(5):
            pub.publish(b"%d" % i)
    assert first_in_hand.wait(10)
    assert ch.message_count("jobs") == 0  # all five are on their way to the consumer
    threading.Timer(0.05, release.set).start()
    ch.cancel(tag)
    assert got == [b"0", b"1", b"2", b"3", b"4"]
    ch.close()
