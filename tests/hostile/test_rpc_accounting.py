"""Issue 10, invariant 2 for RpcServer: every consumed request is accounted for.

A request is answered (an error reply when it carries ``reply_to``), or dead-lettered to
``<queue>.dead`` with the reason, or left on the queue: never acked unanswered and never
rejected into nowhere. Requests come from raw pika (a client hutch did not write).
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hutch import Connection, Queue, RpcClient, RpcServer
from tests.hostile.producer import RawProducer
from tests.hostile.strategies import RawField
from tests.reliability import wait_until

pytestmark = pytest.mark.timeout(180)

NANOS = 1_700_000_000_123_456_789  # Go's UnixNano(): no time in seconds
FAR_FUTURE = RawField(b"T", struct.pack(">Q", 2**40))  # pika cannot decode it


@pytest.fixture
def rpc_queue(raw_producer: RawProducer, unique_name: str) -> Iterator[str]:
    yield unique_name
    ch = raw_producer.channel()
    for name in (unique_name, f"{unique_name}.dead", f"{unique_name}.replies"):
        ch.queue_delete(name)


def _dead(raw: RawProducer, queue: str, count: int, timeout: float = 15) -> list[tuple[Any, bytes]]:
    got: list[tuple[Any, bytes]] = []

    def enough() -> bool:
        try:
            got.extend(raw.drain(queue))
        except pika.exceptions.ChannelClosedByBroker as exc:  # not declared (yet)
            if exc.reply_code != 404:
                raise
        return len(got) >= count

    wait_until(enough, timeout)
    return got


def _serve(conn: Connection, queue: str, **options: Any) -> RpcServer:
    server = RpcServer(conn, queue=queue, **options)

    @server.procedure(raw=True)
    def echo(body: bytes) -> bytes:
        if body.startswith(b"fail"):
            raise RuntimeError("the procedure refused " + body.decode())
        return body

    return server.start()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    case=st.sampled_from(["nanoseconds", "far-future-header", "bad-utf8", "fails"]),
    tail=st.binary(max_size=20),
)
def test_failed_request_without_reply_to_is_dead_lettered(
    conn: Connection, raw_producer: RawProducer, case: str, tail: bytes
) -> None:
    queue = f"hutch-test-rpc-acct-{uuid.uuid4().hex}"
    props: dict[str, Any] = {"correlation_id": uuid.uuid4().hex}  # no reply_to
    body = b"request-" + tail
    if case == "nanoseconds":
        props["timestamp"] = NANOS
    elif case == "far-future-header":
        props["headers"] = {"when": FAR_FUTURE}
    elif case == "bad-utf8":
        props["message_id"] = b"\xff\xfe" + tail
    else:
        body = b"fail-" + tail
    server = _serve(conn, queue)
    try:
        assert raw_producer.publish(queue, body, pika.BasicProperties(**props))
        got = _dead(raw_producer, f"{queue}.dead", 1)
        assert [b for _, b in got] == [body]  # before the fix: acked, nowhere to be found
        headers = got[0][0].headers
        assert isinstance(headers["x-hutch-error"], str) and headers["x-hutch-error"]
        assert headers["x-hutch-original-queue"] == queue
        assert wait_until(lambda: server.dead_lettered == 1, 5)
        assert server.handled == 0 and server.requeued == 0
        # the server goes on answering
        with RpcClient(conn, queue=queue, timeout=10) as client:
            assert client.call_raw(b"canary") == b"canary"
    finally:
        server.close()
        ch = raw_producer.channel()
        ch.queue_delete(queue)
        ch.queue_delete(f"{queue}.dead")


class _Broken(logging.Filter):
    """A user's logging filter that raises: hutch fails on the request, not the procedure."""

    def filter(self, record: logging.LogRecord) -> bool:
        raise RuntimeError("broken logging filter")


@pytest.fixture
def broken_call_log() -> Iterator[None]:
    call_log = logging.getLogger("hutch.call")
    level, broken = call_log.level, _Broken()
    call_log.setLevel(logging.INFO)
    call_log.addFilter(broken)
    yield
    call_log.removeFilter(broken)
    call_log.setLevel(level)


@pytest.mark.parametrize("reply_to", [True, False])
def test_hutch_side_failure_is_dead_lettered_not_dropped(
    conn: Connection,
    raw_producer: RawProducer,
    rpc_queue: str,
    broken_call_log: None,
    reply_to: bool,
) -> None:
    replies = f"{rpc_queue}.replies"
    raw_producer.channel().queue_declare(replies)
    server = _serve(conn, rpc_queue, dead_letter_queue=Queue(f"{rpc_queue}.dead"))
    try:
        props = pika.BasicProperties(correlation_id="c1", reply_to=replies if reply_to else None)
        assert raw_producer.publish(rpc_queue, b"hello", props)
        # before the fix: nacked with requeue=False, and the queue has no dead-letter
        # exchange: gone
        got = _dead(raw_producer, f"{rpc_queue}.dead", 1)
        assert [b for _, b in got] == [b"hello"]
        headers = got[0][0].headers
        assert "broken logging filter" in headers["x-hutch-error"]
        assert headers["x-hutch-error-type"] == "RuntimeError"
        assert wait_until(lambda: server.dead_lettered == 1, 5)
        assert server.is_running
    finally:
        server.close()
    assert not server.is_running


def test_dead_letter_queue_deleted_meanwhile_is_declared_again(
    conn: Connection, raw_producer: RawProducer, rpc_queue: str
) -> None:
    server = _serve(conn, rpc_queue)
    try:
        raw_producer.publish(rpc_queue, b"fail-1", pika.BasicProperties())
        assert len(_dead(raw_producer, f"{rpc_queue}.dead", 1)) == 1
        raw_producer.channel().queue_delete(f"{rpc_queue}.dead")
        raw_producer.publish(rpc_queue, b"fail-2", pika.BasicProperties())
        got = _dead(raw_producer, f"{rpc_queue}.dead", 1)
        assert [b for _, b in got] == [b"fail-2"]
        assert server.dead_lettered == 2 and server.requeued == 0
    finally:
        server.close()


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", ValueError),
        ("x" * 256, ValueError),
        (Queue(""), ValueError),
        (12, TypeError),
    ],
)
def test_dead_letter_queue_argument_is_checked(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="dead_letter_queue"):
        RpcServer("amqp://localhost", queue="q", dead_letter_queue=value)
