"""Generated properties and header tables against every consumer kind (issue 10, invariant 1).

A raw pika producer (a client hutch did not write) publishes messages whose basic properties
and headers hypothesis draws from :mod:`tests.hostile.strategies`: every field type the
broker takes on the wire, range edges, nested tables, undecodable values. After each
example a normal message goes through the same consumer and a hutch Publisher sharing its
connection publishes; then the hostile message must be accounted for.

What is counted, per consumer kind (printed as one ``hostile-input`` line per test, run
with ``-s`` to see them):

* ``examples``: messages drawn and published;
* ``refused``: refused by the broker itself (541 for a NaN/infinite float), never queued;
* ``handled``: taken by the handler (RPC: answered; RPC client: the call returned);
* ``dead``: dead-lettered with an ``x-hutch-error`` reason (RPC server: an error reply;
  RPC client: the call failed with a ``HutchError``, ``InvalidReply`` for bad replies);
* ``lost``: none of these. Must be 0, and the consumer and the connection must live on.
"""

from __future__ import annotations

import math
import queue as _queue
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pika.adapters.blocking_connection import BlockingChannel

from hutch import (
    Connection,
    HutchError,
    InvalidReply,
    Publisher,
    RpcClient,
    RpcServer,
    Subscriber,
    WorkerPool,
)
from tests.hostile.producer import RawProducer
from tests.hostile.strategies import RawField, basic_properties, raw_field_encoder
from tests.reliability import wait_until

pytestmark = pytest.mark.timeout(600)

RUN = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(RUN, max_examples=8)


@dataclass
class Tally:
    kind: str
    examples: int = 0
    refused: int = 0
    handled: int = 0
    dead: int = 0
    lost: int = 0
    reasons: list[str] = field(default_factory=list)

    def report(self) -> None:
        print(
            f"\nhostile-input {self.kind}: examples={self.examples} refused={self.refused} "
            f"handled={self.handled} dead={self.dead} lost={self.lost}"
        )
        assert self.examples == self.refused + self.handled + self.dead + self.lost
        assert self.lost == 0


class DeadLetters:
    """Reads a dead-letter queue with raw pika and checks each copy on the way."""

    def __init__(self, raw: RawProducer, queue: str) -> None:
        self.raw = raw
        self.queue = queue
        self.bodies: set[bytes] = set()

    def poll(self) -> None:
        for props, body in self.raw.drain(self.queue):
            headers = props.headers
            # the copy itself decodes: a plain table with the reason in it
            assert type(headers) is dict, headers
            assert isinstance(headers.get("x-hutch-error"), str) and headers["x-hutch-error"]
            self.bodies.add(body)


def _settle(
    tally: Tally, body: bytes, handled: set[bytes], dead: DeadLetters, timeout: float = 15
) -> None:
    def accounted() -> bool:
        dead.poll()
        return body in handled or body in dead.bodies

    if not wait_until(accounted, timeout):
        tally.lost += 1
    elif body in handled:
        tally.handled += 1
    else:
        tally.dead += 1


def _alive(conn: Connection, pub: Publisher[Any], handled: set[bytes], timeout: float = 15) -> None:
    """A normal message published by hutch on the shared connection is handled."""
    canary = f"canary-{uuid.uuid4().hex}".encode()
    pub.publish(canary)  # confirmed: the connection works for its other users
    assert wait_until(lambda: canary in handled, timeout), "the consumer stopped"
    assert conn.is_open and conn.io.failure is None


@pytest.fixture
def work_queue(raw_producer: RawProducer, unique_name: str) -> Iterator[str]:
    ch = raw_producer.channel()
    ch.queue_declare(unique_name, durable=True)  # as WorkerPool and Subscriber take it
    ch.queue_declare(f"{unique_name}.dead", durable=True)  # as hutch declares it
    yield unique_name
    ch = raw_producer.channel()
    for name in (unique_name, f"{unique_name}.dead", f"{unique_name}.replies"):
        ch.queue_delete(name)


def _publish_hostile(
    raw: RawProducer, queue: str, tally: Tally, props: dict[str, Any]
) -> bytes | None:
    tally.examples += 1
    body = f"hostile-{uuid.uuid4().hex}".encode()
    if not raw.publish(queue, body, pika.BasicProperties(**props)):
        tally.refused += 1
        return None
    return body


def test_subscriber(conn: Connection, raw_producer: RawProducer, work_queue: str) -> None:
    tally, handled = Tally("Subscriber"), set[bytes]()
    dead = DeadLetters(raw_producer, f"{work_queue}.dead")
    errors: list[BaseException] = []
    sub = Subscriber(conn, queue=work_queue, model=bytes)

    def run() -> None:
        try:
            sub.run(handled.add)
        except BaseException as exc:
            errors.append(exc)

    with sub, Publisher(conn, routing_key=work_queue) as pub:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        @RUN
        @given(props=basic_properties())
        def example(props: dict[str, Any]) -> None:
            body = _publish_hostile(raw_producer, work_queue, tally, props)
            _alive(conn, pub, handled)
            if body is not None:
                _settle(tally, body, handled, dead)
            assert thread.is_alive() and not errors, errors

        example()
        sub.stop()
        thread.join(10)
    tally.report()


def _pool_test(
    conn: Connection, raw: RawProducer, queue: str, *, processes: bool, run: settings
) -> Tally:
    tally = Tally("WorkerPool(processes)" if processes else "WorkerPool(threads)")
    handled: set[bytes] = set()
    dead = DeadLetters(raw, f"{queue}.dead")
    pool: WorkerPool[bytes]
    if processes:
        pool = WorkerPool(
            conn,
            queue=queue,
            handler="tests.hostile.handlers:accept",
            model=bytes,
            concurrency=1,
            processes=True,
        )
    else:
        pool = WorkerPool(conn, queue=queue, handler=handled.add, model=bytes, concurrency=2)
    with pool.start(), Publisher(conn, routing_key=queue) as pub:

        @run
        @given(props=basic_properties())
        def example(props: dict[str, Any]) -> None:
            before = pool.stats
            body = _publish_hostile(raw, queue, tally, props)
            canary = f"canary-{uuid.uuid4().hex}".encode()
            pub.publish(canary)
            expected = 2 if body is not None else 1
            # a child's handled bodies stay in the child: count by the pool's own stats
            assert wait_until(
                lambda: (
                    (pool.stats.processed + pool.stats.dead_lettered)
                    - (before.processed + before.dead_lettered)
                    >= expected
                ),
                30,
            ), pool.stats
            assert conn.is_open and conn.io.failure is None and pool.is_running
            if body is not None:
                if not processes:
                    _settle(tally, body, handled, dead)
                elif pool.stats.dead_lettered > before.dead_lettered:
                    _settle(tally, body, set(), dead)
                else:
                    tally.handled += 1

        example()
    tally.report()
    return tally


def test_worker_pool_threads(conn: Connection, raw_producer: RawProducer, work_queue: str) -> None:
    _pool_test(conn, raw_producer, work_queue, processes=False, run=RUN)


def test_worker_pool_processes(
    conn: Connection, raw_producer: RawProducer, work_queue: str
) -> None:
    _pool_test(conn, raw_producer, work_queue, processes=True, run=FEW)


def test_rpc_server(conn: Connection, raw_producer: RawProducer, work_queue: str) -> None:
    """With ``reply_to``: answered (ok or an error reply). Without: run, or dead-lettered."""
    tally = Tally("RpcServer")
    replies = f"{work_queue}.replies"
    rpc_queue = f"{work_queue}.rpc"
    raw_producer.channel().queue_declare(replies)
    raw_producer.channel().queue_declare(f"{rpc_queue}.dead", durable=True)  # as hutch does
    server = RpcServer(conn, queue=rpc_queue)
    dead = DeadLetters(raw_producer, f"{rpc_queue}.dead")
    ran: set[bytes] = set()

    @server.procedure(raw=True)
    def echo(body: bytes) -> bytes:
        ran.add(body)
        return body

    try:
        with server.start(), RpcClient(conn, queue=rpc_queue, timeout=10) as client:
            with Publisher(conn, routing_key=work_queue) as pub:

                @RUN
                @given(props=basic_properties(), with_reply=st.booleans())
                def example(props: dict[str, Any], with_reply: bool) -> None:
                    cid = uuid.uuid4().hex
                    props = {**props, "correlation_id": cid}
                    props.pop("reply_to", None)
                    if with_reply:
                        props["reply_to"] = replies
                    body = _publish_hostile(raw_producer, rpc_queue, tally, props)
                    # the server lives on, and so does the connection it shares
                    assert client.call_raw(b"canary") == b"canary"
                    pub.publish(b"still publishing")
                    if body is None:
                        return
                    if not with_reply:  # nobody to answer: it ran, or the DLQ has it
                        _settle(tally, body, ran, dead)
                        return
                    got: list[Any] = []

                    def answered() -> bool:
                        got.extend(
                            p for p, _ in raw_producer.drain(replies) if p.correlation_id == cid
                        )
                        return bool(got)

                    if not wait_until(answered, 15):
                        tally.lost += 1
                    elif got[0].headers.get("x-hutch-status") == "ok":
                        tally.handled += 1
                    else:
                        tally.dead += 1

                example()
        server.stop()
        assert server.requeued == 0
    finally:
        ch = raw_producer.channel()
        ch.queue_delete(rpc_queue)
        ch.queue_delete(f"{rpc_queue}.dead")
    tally.report()


def _foreign_rpc_server(
    url: str,
    queue: str,
    replies: _queue.Queue[dict[str, Any]],
    stop: threading.Event,
    refusals: list[int],
) -> None:
    """Answers each request with the next drawn properties (raw pika, its own connection)."""

    def connect() -> tuple[pika.BlockingConnection, BlockingChannel]:
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        # with confirms a refused reply raises in basic_publish, before the client's call
        # can time out; unconfirmed, it surfaced at the next basic_get, after the test had
        # counted the timeout as lost and the dead server failed the test (seen on a full run)
        ch.confirm_delivery()
        return conn, ch

    conn, ch = connect()
    while not stop.is_set():
        method, req, _ = ch.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.005)
            continue
        assert req is not None and isinstance(req.reply_to, str)
        props = {**replies.get(timeout=10), "correlation_id": req.correlation_id}
        try:
            with raw_field_encoder():
                ch.basic_publish("", req.reply_to, b"reply", pika.BasicProperties(**props))
        except (pika.exceptions.ConnectionClosed, pika.exceptions.ChannelClosed):
            # the broker refused the reply: a NaN or infinite float in its headers closes
            # the publisher's connection (541 INTERNAL_ERROR) on direct reply-to, so the
            # call times out
            refusals.append(1)
            conn, ch = connect()
    conn.close()


def test_rpc_client_reply_path(
    conn: Connection, raw_producer: RawProducer, work_queue: str, amqp_url: str
) -> None:
    tally = Tally("RpcClient replies")
    rpc_queue = f"{work_queue}.rpc"
    raw_producer.channel().queue_declare(rpc_queue, auto_delete=False)
    replies: _queue.Queue[dict[str, Any]] = _queue.Queue()
    stop = threading.Event()
    refusals: list[int] = []
    server = threading.Thread(
        target=_foreign_rpc_server,
        args=(amqp_url, rpc_queue, replies, stop, refusals),
        daemon=True,
    )
    server.start()
    try:
        with (
            RpcClient(conn, queue=rpc_queue, timeout=3) as client,
            Publisher(conn, routing_key=work_queue) as pub,
        ):

            @RUN
            @given(props=basic_properties())
            # a reply that RabbitMQ refuses, every run: a NaN double in its headers
            @hypothesis.example(
                props={"headers": {"nan": RawField(b"d", struct.pack(">d", math.nan))}}
            )
            def example(props: dict[str, Any]) -> None:
                tally.examples += 1
                replies.put(props)
                try:
                    assert client.call_raw(b"x") == b"reply"
                    tally.handled += 1
                except InvalidReply as exc:
                    tally.reasons.append(exc.reason)
                    tally.dead += 1
                except HutchError:
                    # RpcTimeout is right only when the broker refused the reply (a NaN)
                    if refusals:
                        refusals.pop()
                        tally.refused += 1
                    else:
                        tally.lost += 1
                # the client and its connection go on
                replies.put({})
                assert client.call_raw(b"canary") == b"reply"
                pub.publish(b"still publishing")
                assert conn.io.failure is None

            example()
        assert all(tally.reasons)
    finally:
        stop.set()
        server.join(10)
        raw_producer.channel().queue_delete(rpc_queue)
    tally.report()
