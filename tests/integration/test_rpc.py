"""RPC against a real broker: round trips, concurrency, failures, timeouts, interop with pika."""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import pika
import pytest
from pydantic import BaseModel

from hutch import (
    ClosedError,
    Connection,
    ConnectionLost,
    NoServer,
    PublishError,
    Queue,
    RemoteError,
    RpcClient,
    RpcError,
    RpcServer,
    RpcTimeout,
    ValidationError,
)
from hutch.testing import Broker
from tests.reliability import wait_until
from tests.waits import result_on


class Point(BaseModel):
    x: int
    y: int


class Calculator(Protocol):
    def add(self, x: int, y: int) -> int: ...

    def add_point(self, x: int, y: int) -> Point: ...

    def move(self, p: Point, dx: int = 0) -> Point: ...

    def centroid(self, points: list[Point]) -> Point | None: ...


class CalculatorImpl:
    def add(self, x: int, y: int) -> int:
        return x + y

    def add_point(self, x: int, y: int) -> Point:
        return Point(x=x, y=y)

    def move(self, p: Point, dx: int = 0) -> Point:
        return Point(x=p.x + dx, y=p.y)

    def centroid(self, points: list[Point]) -> Point | None:
        if not points:
            return None
        return Point(
            x=sum(p.x for p in points) // len(points), y=sum(p.y for p in points) // len(points)
        )


class Misdeclared(Protocol):
    """What a client believes: the server's `half_point` returns a Point (it does not)."""

    def half_point(self) -> Point: ...


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@dataclass
class Served:
    server: RpcServer
    queue: str
    executed: collections.Counter[str] = field(default_factory=collections.Counter)
    # wait_for_gate: `entered` once a handler runs it, which then holds the call until `gate`
    # is set: a slow server whose reply comes exactly when the test lets it
    entered: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str) -> None:
        with self.lock:
            self.executed[name] += 1

    def wait_for_gate(self) -> bool:
        """Wait until the test opens the gate (30 s of real time at most).

        On the server's clock: on the memory broker's virtual time a handler waiting here
        lets time jump to the caller's timeout, as a handler that is simply slow would
        not.
        """
        gate = self.gate
        return self.server._conn.clock.wait(gate.is_set, gate.wait, None, poll=30)


def rpc_queue(name: str) -> Queue:
    # not durable, as RpcServer's default; x-expires cleans up after a failed test
    return Queue(name, durable=False, auto_delete=False, expires=60)


def build_server(url: str, queue: str, **options: Any) -> Served:
    server = RpcServer(url, queue=rpc_queue(queue), default="fib", **options)
    served = Served(server, queue)
    server.implement(Calculator, CalculatorImpl())
    server.implement(Calculator, CalculatorImpl(), prefix="v2.")

    @server.procedure
    def echo(*values: object) -> list[object]:
        served.count("echo")
        return list(values)

    @server.procedure
    def fail(message: str) -> None:
        served.count("fail")
        raise ValueError(message)

    @server.procedure
    def wait_for_gate() -> bool:
        served.count("wait_for_gate")
        served.entered.set()
        return served.wait_for_gate()

    @server.procedure
    def record(tag: str) -> str:
        served.count(f"record:{tag}")
        return tag

    @server.procedure(name="half_point")
    def half() -> dict[str, int]:
        return {"x": 1}

    @server.procedure(raw=True, name="fib")
    def raw_fib(n: int) -> int:
        served.count("fib")
        return fib(n)

    @server.procedure(raw=True)
    def reverse(body: bytes) -> bytes:
        return body[::-1]

    @server.procedure(raw=True)
    def shout(text: str) -> str:
        return text.upper()

    @server.procedure(raw=True)
    def double(x: float) -> float:
        return x * 2

    return served


@pytest.fixture
def served(amqp_url: str, unique_name: str, conn: Connection) -> Iterator[Served]:
    s = build_server(amqp_url, unique_name)
    with s.server:
        yield s
        s.gate.set()  # a call the test left waiting at the gate ends: the server can close
    conn.channel().delete_queue(unique_name)


@pytest.fixture
def client(conn: Connection, served: Served) -> Iterator[RpcClient]:
    with RpcClient(conn, queue=served.queue, timeout=10) as c:
        yield c


# ------------------------------------------------------------------ round trips
def test_round_trip_of_primitives_models_and_raw_bodies(client: RpcClient, served: Served) -> None:
    assert client.call("add", 1, 2) == 3
    assert client.call("add", x=1, y=2) == 3
    values: list[object] = [1, 2.5, "text", True, None, [1, "a"], {"k": [1, 2]}]
    assert client.call("echo", *values) == values
    # models go as JSON objects and come back as JSON values from untyped calls
    assert client.call("move", Point(x=1, y=2), dx=3) == {"x": 4, "y": 2}
    assert client.proxy.add_point(5, 6) == {"x": 5, "y": 6}
    # typed stub: validated into the interface's return types
    calc = client.stub(Calculator)
    assert calc.add(2, 3) == 5
    point = calc.add_point(1, 2)
    assert isinstance(point, Point) and point == Point(x=1, y=2)
    assert calc.move(Point(x=1, y=1), dx=1) == Point(x=2, y=1)
    assert calc.centroid([Point(x=0, y=0), Point(x=2, y=4)]) == Point(x=1, y=2)
    assert calc.centroid([]) is None
    assert client.stub(Calculator, prefix="v2.").add(20, 22) == 42
    # raw bodies
    assert client.call_raw("30") == b"832040"  # the default procedure
    assert client.call_raw(b"\x00\x01\xff", procedure="reverse") == b"\xff\x01\x00"
    assert client.call_raw("abc", procedure="shout") == b"ABC"
    assert client.call_raw("1.2", procedure="double") == b"2.4"
    assert served.server.failed == 0
    assert served.server.handled == 15


def test_200_concurrent_calls_from_8_threads_each_matched(
    client: RpcClient, served: Served
) -> None:
    results: dict[int, list[object]] = {t: [] for t in range(8)}
    errors: list[BaseException] = []

    def caller(t: int) -> None:
        try:
            for i in range(25):
                results[t].append(client.call("echo", t, i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    for t in range(8):
        assert results[t] == [[t, i] for i in range(25)]
    assert sum(len(r) for r in results.values()) == 200
    # and 200 more in flight at once from one thread
    futures = [client.call_async("add", i, i) for i in range(200)]
    assert [f.result(30) for f in futures] == [2 * i for i in range(200)]
    assert served.executed["echo"] == 200
    assert served.server.handled == 400
    assert client.dropped_replies == 0


@pytest.mark.rabbitmq_only("which thread reads the replies is the pika driver's protocol")
def test_blocking_calls_read_their_replies_on_the_calling_thread(
    conn: Connection, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No hand-over to the I/O thread and back (docs/threading.md): the caller sends its
    # request and reads its reply itself; call_async leaves both to the I/O thread.
    readers: list[threading.Thread] = []
    original = RpcClient._on_reply

    def spy(self: RpcClient, delivery: Any) -> None:
        readers.append(threading.current_thread())
        original(self, delivery)

    monkeypatch.setattr(RpcClient, "_on_reply", spy)
    with RpcClient(conn, queue=served.queue, timeout=10) as c:
        for i in range(20):
            assert c.call("echo", i) == [i]
        blocking, readers[:] = list(readers), []
        assert [c.call_async("echo", i).result(10) for i in range(5)] == [[i] for i in range(5)]
    me = threading.current_thread()
    # the I/O thread may hold the connection at the odd moment: then it reads that reply
    assert sum(t is me for t in blocking) >= 15, [t.name for t in blocking]
    assert all(t is not me for t in readers)


def test_exclusive_reply_queue_on_an_owned_connection(amqp_url: str, served: Served) -> None:
    with RpcClient(amqp_url, queue=served.queue, reply_queue="exclusive") as c:
        futures = [c.call_async("add", i, 1) for i in range(50)]
        assert [f.result(30) for f in futures] == [i + 1 for i in range(50)]
        assert c.stub(Calculator).add_point(3, 4) == Point(x=3, y=4)
        assert c.call_raw("10") == b"55"


# ------------------------------------------------------------------ failures
def test_server_exception_becomes_remote_error(client: RpcClient, served: Served) -> None:
    with pytest.raises(RemoteError) as info:
        client.call("fail", "out of stock")
    assert info.value.type_name == "ValueError"
    assert info.value.remote_message == "out of stock"
    assert info.value.remote_traceback is None
    assert str(info.value) == "ValueError: out of stock"
    assert served.executed["fail"] == 1
    assert served.server.failed == 1
    # the client keeps working
    assert client.call("add", 1, 1) == 2


def test_traceback_only_when_the_server_opts_in(
    amqp_url: str, conn: Connection, unique_name: str
) -> None:
    s = build_server(amqp_url, unique_name, include_traceback=True)
    with s.server, RpcClient(conn, queue=unique_name) as c:
        with pytest.raises(RemoteError) as info:
            c.call("fail", "boom")
    conn.channel().delete_queue(unique_name)
    assert info.value.remote_traceback is not None
    assert "raise ValueError(message)" in info.value.remote_traceback


def test_unknown_procedure_is_a_remote_error(client: RpcClient) -> None:
    with pytest.raises(RemoteError) as info:
        client.call("no_such_thing", 1)
    assert info.value.type_name == "UnknownProcedure"
    assert "no_such_thing" in info.value.remote_message
    assert "add_point" in info.value.remote_message  # lists what the server offers


def test_validation_failure_names_the_field(client: RpcClient, served: Served) -> None:
    with pytest.raises(RemoteError) as info:
        client.call("add_point", "one", 2)
    assert info.value.type_name == "ValidationError"
    assert "'x'" in info.value.remote_message
    with pytest.raises(RemoteError) as nested:
        client.call("move", {"x": 1, "y": "north"})
    assert nested.value.type_name == "ValidationError"
    assert "'p.y'" in nested.value.remote_message
    with pytest.raises(RemoteError) as arity:
        client.call("add", 1)
    assert arity.value.type_name == "TypeError"
    assert "'y'" in arity.value.remote_message
    # a stub checks the arity before sending
    with pytest.raises(TypeError, match="missing a required argument: 'y'"):
        client.stub(Calculator).add(1)  # type: ignore[call-arg]
    assert served.server.handled == 3


def test_stub_validates_the_result(client: RpcClient) -> None:
    with pytest.raises(ValidationError) as info:
        client.stub(Misdeclared).half_point()
    assert info.value.field == "y"


def test_no_server_queue_fails_fast(conn: Connection, unique_name: str) -> None:
    with RpcClient(conn, queue=unique_name, timeout=10) as c:
        start = time.monotonic()
        with pytest.raises(NoServer, match=unique_name):
            c.call("add", 1, 2)
        assert time.monotonic() - start < 2
        future = c.call_async("add", 1, 2)
        with pytest.raises(NoServer):
            future.result(2)
        with pytest.raises(NoServer):
            c.call_raw("30")


def test_a_request_that_cannot_be_sent_fails_its_call_at_once(
    conn: Connection, unique_name: str
) -> None:
    # a procedure name with a lone surrogate cannot be encoded as an AMQP header: the
    # blocking call (whose request has no future of its own) and the async one both fail
    # with the reason at once, not with RpcTimeout after their timeout
    with RpcClient(conn, queue=unique_name, timeout=10) as c:
        start = time.monotonic()
        with pytest.raises(PublishError, match="cannot be encoded"):
            c.call("bad\ud800", 1)
        with pytest.raises(PublishError, match="cannot be encoded"):
            c.call_async("bad\ud800", 1).result(5)
        assert time.monotonic() - start < 2
        assert "pending=0" in repr(c)  # neither call is left waiting


def test_slow_server_times_out_and_the_late_reply_is_dropped(
    client: RpcClient, served: Served, conn: Connection
) -> None:
    # the server holds the call until the gate opens: its reply is late by construction
    start = conn.clock.now()
    with pytest.raises(RpcTimeout):
        client.call("wait_for_gate", timeout=0.2)
    elapsed = conn.clock.now() - start
    assert 0.2 <= elapsed < 1.0
    assert isinstance(RpcTimeout("x"), TimeoutError)
    # the next call is not confused by the late reply to the first one
    assert client.call("echo", "next") == ["next"]
    served.gate.set()  # the late reply goes out now
    assert wait_until(lambda: client.dropped_replies >= 1, 10, interval=0.005)
    assert client.dropped_replies == 1
    assert client.call("echo", "after") == ["after"]
    # asynchronous calls time out too (the first handler has returned: its reply came)
    served.gate.clear()
    future = client.call_async("wait_for_gate", timeout=0.2)
    with pytest.raises(RpcTimeout):
        result_on(conn.clock, future, 5)
    served.gate.set()
    assert wait_until(lambda: client.dropped_replies >= 2, 10, interval=0.005)
    assert client.dropped_replies == 2
    assert served.executed["wait_for_gate"] == 2


@pytest.mark.parametrize("prefetch", [1, 4])
def test_expired_request_is_not_executed(
    amqp_url: str, conn: Connection, unique_name: str, prefetch: int
) -> None:
    # the one worker is busy until the gate opens; a call that gives up after 0.1 s waits
    # behind it, in the queue (prefetch 1: the broker drops it) or in the server
    # (prefetch 4: skipped)
    s = build_server(amqp_url, unique_name, concurrency=1, prefetch=prefetch)
    with s.server, RpcClient(conn, queue=unique_name) as c:
        busy = c.call_async("wait_for_gate", timeout=30)
        assert s.entered.wait(10)
        with pytest.raises(RpcTimeout):
            c.call("record", "late", timeout=0.1)
        # the broker and the server count the request's 0.1 s from when it reached them, a
        # moment after the caller started its clock: the worker frees up well after that
        conn.clock.sleep(0.3)
        s.gate.set()
        assert busy.result(10) is True
        assert c.call("record", "fresh") == "fresh"
        assert s.executed["record:late"] == 0
        assert s.executed["record:fresh"] == 1
        assert s.server.expired == (1 if prefetch > 1 else 0)
    conn.channel().delete_queue(unique_name)


SERVER_SCRIPT = """
import sys, time
import hutch
server = hutch.RpcServer(
    sys.argv[1], queue=hutch.Queue(sys.argv[2], durable=False, auto_delete=False, expires=60)
)

@server.procedure
def sleep(seconds: float) -> float:
    print("started", flush=True)
    time.sleep(seconds)
    return seconds

server.start()
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.rabbitmq_only("a server in another process")
def test_server_process_killed_mid_call_gives_rpc_timeout(
    amqp_url: str, conn: Connection, unique_name: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, amqp_url, unique_name],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with RpcClient(conn, queue=unique_name) as c:
            start = time.monotonic()
            future = c.call_async("sleep", 30, timeout=3)
            assert proc.stdout.readline().strip() == "started"
            proc.kill()  # SIGKILL: no goodbye to the broker
            proc.wait(10)
            with pytest.raises(RpcTimeout):
                future.result(10)
            assert 2.9 < time.monotonic() - start < 6
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        conn.channel().delete_queue(unique_name)


def test_blocking_call_in_a_future_callback_is_refused(client: RpcClient, served: Served) -> None:
    outcome: Future[object] = Future()

    def callback(_done: Future[object]) -> None:  # runs on the connection's I/O thread
        try:
            outcome.set_result(client.call("add", 1, 2))
        except BaseException as exc:
            outcome.set_exception(exc)

    # the gate keeps the reply back until the callback is attached: it then runs on the
    # I/O thread when the reply arrives
    client.call_async("wait_for_gate").add_done_callback(callback)
    served.gate.set()
    with pytest.raises(RpcError, match="use call_async"):
        outcome.result(5)
    assert client.call("add", 2, 2) == 4


def test_client_close_fails_waiting_calls(client: RpcClient, served: Served) -> None:
    future: Future[object] = client.call_async("wait_for_gate")
    assert served.entered.wait(10)  # the server runs the call: its reply is all that is missing
    client.close()
    with pytest.raises(ClosedError):
        future.result(2)
    with pytest.raises(ClosedError):
        client.call("add", 1, 2)
    client.close()  # idempotent


def test_server_stop_answers_in_flight_calls(
    amqp_url: str, conn: Connection, unique_name: str
) -> None:
    s = build_server(amqp_url, unique_name)
    s.server.start()  # consuming once this returns; run() then only blocks
    runner = threading.Thread(target=s.server.run)
    runner.start()
    try:
        with RpcClient(conn, queue=unique_name) as c:
            assert c.call("add", 1, 2) == 3
            future = c.call_async("wait_for_gate")
            assert s.entered.wait(10)
            s.server.stop()
            # stop() on the main thread only sets a flag, which the server reads within 0.1 s
            # and then stops consuming: the call is still running all that time
            conn.clock.sleep(0.2)
            assert not future.done()
            s.gate.set()
            assert future.result(5) is True
            runner.join(10)
            assert not runner.is_alive()
            with pytest.raises(ClosedError):
                s.server.start()
            # the queue stays (not auto-deleted): callers now wait instead of failing
            with pytest.raises(RpcTimeout):
                c.call("add", 1, 2, timeout=0.2)
    finally:
        s.gate.set()
        s.server.close()
        runner.join(10)
        conn.channel().delete_queue(unique_name)
    assert s.server.handled == 2


@pytest.mark.rabbitmq_only("fault injection: closes the client's connection from the broker side")
def test_connection_lost_fails_waiting_calls_at_once(
    controllable_broker: Broker, served: Served, unique_name: str
) -> None:
    with (
        Connection(controllable_broker.url, connection_name=f"{unique_name}-client") as c,
        RpcClient(c, queue=served.queue) as client,
    ):
        future = client.call_async("wait_for_gate", timeout=60)  # answered after the test
        try:
            assert controllable_broker.close_connections(f"{unique_name}-client", "test") == 1
            with pytest.raises(ConnectionLost):
                future.result(5)  # at once, not after 60 s
        finally:
            served.gate.set()
        # after recovery the client works again
        deadline = time.monotonic() + 15
        while True:
            try:
                assert client.call("add", 2, 2, timeout=2) == 4
                break
            except (ConnectionLost, RpcTimeout):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


# ------------------------------------------------------------------ interop with plain pika
@pytest.mark.rabbitmq_only("interop with plain pika")
def test_plain_pika_client_against_hutch_server(amqp_url: str, served: Served) -> None:
    # the classic tutorial client: exclusive server-named callback queue, text body
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        callback_queue = channel.queue_declare("", exclusive=True).method.queue
        replies: dict[str, bytes] = {}

        def on_response(_ch: Any, _method: Any, props: pika.BasicProperties, body: bytes) -> None:
            replies[str(props.correlation_id)] = body

        channel.basic_consume(callback_queue, on_response, auto_ack=True)

        def call(body: str, headers: dict[str, Any] | None = None) -> bytes:
            corr_id = str(uuid.uuid4())
            channel.basic_publish(
                "",
                served.queue,
                body,
                pika.BasicProperties(
                    reply_to=callback_queue, correlation_id=corr_id, headers=headers
                ),
            )
            deadline = time.monotonic() + 10
            while corr_id not in replies:
                assert time.monotonic() < deadline, "no reply"
                connection.process_data_events(time_limit=0.1)
            return replies.pop(corr_id)

        assert call("30") == b"832040"
        assert call("10") == b"55"
        assert call("1.2", headers={"x-hutch-procedure": "double"}) == b"2.4"
        assert served.executed["fib"] == 2
    finally:
        connection.close()


@pytest.mark.rabbitmq_only("interop with plain pika")
def test_hutch_client_against_plain_pika_server(
    amqp_url: str, conn: Connection, unique_name: str
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare(unique_name, auto_delete=True)
    channel.basic_qos(prefetch_count=1)
    requests: list[bytes] = []
    stop = threading.Event()

    def on_request(ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        requests.append(body)
        response = str(fib(int(body)))
        ch.basic_publish(
            "",
            props.reply_to,
            response,
            pika.BasicProperties(correlation_id=props.correlation_id),
        )
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(unique_name, on_request)

    def serve() -> None:
        while not stop.is_set():
            connection.process_data_events(time_limit=0.05)
        connection.close()

    server = threading.Thread(target=serve)
    server.start()
    try:
        with RpcClient(conn, queue=unique_name, timeout=10) as c:
            assert c.call_raw("30") == b"832040"
            assert c.call_raw(b"12") == b"144"
    finally:
        stop.set()
        server.join(10)
    assert requests == [b"30", b"12"]
