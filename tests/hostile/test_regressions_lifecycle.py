"""Issue 10, rows 10-13: lifecycles end cleanly; blocking calls refuse where they would hang.

* Row 10: an ``open()`` that runs out of time leaves no connection and no thread behind.
* Row 11: ``run()`` of WorkerPool, RpcServer and Subscriber returns or raises ClosedError
  within seconds when the shared connection is closed, from anywhere.
* Row 12: start/stop cycles on one connection leave no listener, thread, descriptor or
  memory behind.
* Row 13: a confirmed publish in a future's done-callback (the I/O thread) fails at once.

All against the real broker; the slow endpoint of row 10 is a real TCP forwarder that holds
new links until released.
"""

from __future__ import annotations

import gc
import os
import selectors
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pika
import pytest

import hutch
from hutch import (
    ClosedError,
    Connection,
    OperationTimeout,
    Publisher,
    PublishError,
    Queue,
    RpcClient,
    RpcError,
    RpcServer,
    Subscriber,
    WorkerPool,
)
from tests.reliability import wait_until

pytestmark = pytest.mark.timeout(180)


# ------------------------------------------------------------------ a slow endpoint
class _Gate:
    """A forwarder to the broker that holds every new link silent until :meth:`release`.

    To a client it is a broker whose handshake never starts. Once released, held links whose
    client is still there are forwarded to the broker (their handshake goes on and a
    broker-side connection opens), and so are new ones. :meth:`live_links` counts the links
    forwarded to the broker and still open: broker-side connections made through the gate.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._live: list[tuple[socket.socket, socket.socket]] = []
        self._open = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="test-gate", daemon=True)
        self._thread.start()

    def url(self, broker_url: str) -> str:
        parts = urlsplit(broker_url)
        userinfo = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{self.port}"))

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self._open.is_set():
                    self._forward(client)
                else:
                    self._held.append(client)

    def _forward(self, client: socket.socket) -> None:
        client.setblocking(False)
        try:
            if client.recv(1, socket.MSG_PEEK) == b"":
                client.close()  # the client gave up while held: nothing to forward
                return
        except BlockingIOError:
            pass  # still there, nothing sent yet
        except OSError:
            client.close()
            return
        client.setblocking(True)
        upstream = socket.create_connection(self.target, timeout=5)
        upstream.settimeout(None)
        self._live.append((client, upstream))
        threading.Thread(
            target=self._pump, args=(client, upstream), name="test-gate-link", daemon=True
        ).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ)
            sel.register(upstream, selectors.EVENT_READ)
            try:
                while not self._closed.is_set():
                    for key, _ in sel.select(0.1):
                        src: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = src.recv(65536)
                        if not data:
                            return
                        peer[src].sendall(data)
            except OSError:
                return
            finally:
                with self._lock:
                    if (client, upstream) in self._live:
                        self._live.remove((client, upstream))
                client.close()
                upstream.close()

    def release(self) -> None:
        with self._lock:
            self._open.set()
            held, self._held = self._held, []
            for client in held:
                self._forward(client)

    def live_links(self) -> int:
        with self._lock:
            return len(self._live)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._thread.join(2)
        with self._lock:
            for client in self._held:
                client.close()
            self._held.clear()


@pytest.fixture
def gate(amqp_url: str) -> Iterator[_Gate]:
    parts = urlsplit(amqp_url)
    g = _Gate(parts.hostname or "127.0.0.1", parts.port or 5672)
    yield g
    g.close()


def _io_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("hutch-io-")}


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ------------------------------------------------------------------ row 10
def test_regression_row10_timed_out_open_leaves_no_connection_or_thread(
    gate: _Gate, amqp_url: str, unique_name: str
) -> None:
    url = gate.url(amqp_url)
    before = _io_threads()
    for i in range(5):
        started = time.monotonic()
        with pytest.raises(OperationTimeout, match=r"connecting took longer than 0\.5 s"):
            hutch.connect(url, open_timeout=0.5, connection_name=f"{unique_name}-{i}")
        assert time.monotonic() - started < 0.5 + 2.5
        # was: each timed-out open left its I/O thread connecting on
        assert _io_threads() - before == set()
    # the endpoint comes back: was, every abandoned attempt then completed its handshake
    # and stayed connected, unreachable (5 orphan broker connections)
    gate.release()
    time.sleep(2)
    assert gate.live_links() == 0
    assert _io_threads() - before == set()
    # control: through the released gate a connection opens, and is counted
    with hutch.connect(url, open_timeout=10, connection_name=f"{unique_name}-ok") as conn:
        assert conn.is_open
        assert gate.live_links() == 1
    assert wait_until(lambda: gate.live_links() == 0, 5)


def test_failed_open_joins_its_thread(unique_name: str) -> None:
    # nothing listens there: ConnectError at once, and no thread left behind
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    before = _io_threads()
    with pytest.raises(hutch.ConnectError):
        hutch.connect(f"amqp://guest:guest@127.0.0.1:{port}/", open_timeout=5)
    assert _io_threads() - before == set()


# ------------------------------------------------------------------ row 11
_KINDS = ["worker_pool", "rpc_server", "subscriber"]
_CLOSERS = ["other_thread", "handler", "with_exit"]


class _Served:
    """A consumer of one kind serving on ``conn`` (run() on a thread of its own).

    Its handler takes any body and, if ``close_in_handler``, closes ``conn``.
    """

    def __init__(self, kind: str, conn: Connection, name: str, close_in_handler: bool) -> None:
        self.handled = threading.Event()

        def work(_body: object) -> None:
            self.handled.set()
            if close_in_handler:
                conn.close()

        def raw(body: bytes) -> bytes:  # an RPC procedure that takes any plain body
            work(body)
            return b""

        queue = Queue(name, durable=False, auto_delete=True)
        dead = Queue(f"{name}.dead", durable=False, auto_delete=True)
        run: Callable[[], object]
        if kind == "worker_pool":
            pool = WorkerPool(
                conn,
                queue=queue,
                handler=work,
                concurrency=2,
                dead_letter_queue=dead,
                retry=None,
                timeout=5,
            ).start()
            run = pool.run
        elif kind == "rpc_server":
            server = RpcServer(conn, queue=queue)
            server.register(raw, "work", raw=True)  # the default: no procedure named
            run = server.start().run
        else:
            sub = Subscriber(conn, queue=queue, dead_letter_queue=dead, timeout=5).open()

            def run() -> object:
                return sub.run(work)

        self.outcome: Future[object] = Future()

        def serve() -> None:
            try:
                self.outcome.set_result(run())
            except BaseException as exc:
                self.outcome.set_exception(exc)

        self.thread = threading.Thread(target=serve, name="test-run", daemon=True)
        self.thread.start()


@pytest.mark.parametrize("closer", _CLOSERS)
@pytest.mark.parametrize("kind", _KINDS)
def test_regression_row11_run_ends_when_the_connection_is_closed(
    kind: str, closer: str, amqp_url: str, unique_name: str
) -> None:
    conn = Connection(amqp_url, connection_name=unique_name).open()
    try:
        served = _Served(kind, conn, unique_name, close_in_handler=closer == "handler")
        time.sleep(0.3)  # run() is waiting
        assert not served.outcome.done()
        started = time.monotonic()
        if closer == "other_thread":
            conn.close()
        elif closer == "handler":
            params = pika.URLParameters(amqp_url)
            with pika.BlockingConnection(params) as raw:
                raw.channel().basic_publish("", unique_name, b"close the connection, please")
            assert served.handled.wait(10)
        else:
            with conn:
                pass  # the with block's exit closes it
        # was: WorkerPool.run() and RpcServer.run() blocked for ever (only "failed" watched)
        try:
            served.outcome.result(timeout=3)
        except ClosedError:
            pass
        assert time.monotonic() - started < 3
        served.thread.join(1)
        assert not served.thread.is_alive()
    finally:
        conn.close()


# ------------------------------------------------------------------ row 12
def _cycles(
    conn: Connection, cycle: Callable[[int], None], budget: float, most: int
) -> tuple[int, dict[str, int]]:
    """Run ``cycle`` up to ``most`` times within ``budget`` seconds after a warm-up.

    Returns:
        The number of measured cycles, and the growth of threads, descriptors, traced
        memory (bytes) and connection listeners over them.
    """
    for i in range(20):  # warm-up: pika's and hutch's caches, the first channel numbers
        cycle(i)
    gc.collect()
    threads, fds, listeners = threading.active_count(), _fds(), len(conn.io._listeners)
    memory = tracemalloc.get_traced_memory()[0]
    deadline = time.monotonic() + budget
    n = 0
    while n < most and time.monotonic() < deadline:
        cycle(20 + n)
        n += 1
    gc.collect()
    assert wait_until(lambda: threading.active_count() <= threads, 5)
    return n, {
        "threads": threading.active_count() - threads,
        "fds": _fds() - fds,
        "memory": tracemalloc.get_traced_memory()[0] - memory,
        "listeners": len(conn.io._listeners) - listeners,
    }


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def _flat(kind: str, n: int, growth: dict[str, int], record: Callable[[str, object], None]) -> None:
    record(f"{kind}_cycles", n)
    record(f"{kind}_growth", growth)
    print(f"{kind}: {n} start/stop cycles, growth {growth}")
    assert growth["threads"] == 0, growth
    assert growth["fds"] <= 0, growth
    assert growth["listeners"] == 0, growth
    # was: ~19 KiB per WorkerPool cycle (its listener held the pool and all it owned)
    assert growth["memory"] < 512 * 1024, growth


@pytest.mark.usefixtures("traced")
def test_regression_row12_worker_pool_start_stop_leaves_nothing_behind(
    conn: Connection, unique_name: str, record_property: Callable[[str, object], None]
) -> None:
    queue = Queue(unique_name, durable=False, auto_delete=False)
    dead = Queue(f"{unique_name}.dead", durable=False, auto_delete=False)

    def cycle(_i: int) -> None:
        pool = WorkerPool(
            conn, queue=queue, handler=lambda _b: None, concurrency=2, dead_letter_queue=dead
        )
        pool.start()
        pool.stop(timeout=5)

    try:
        n, growth = _cycles(conn, cycle, budget=45, most=1000)
    finally:
        ch = conn.channel()
        ch.delete_queue(queue.name)
        ch.delete_queue(dead.name)
        ch.close()
    _flat("worker_pool", n, growth, record_property)
    assert n >= 200  # enough cycles for a leak of a few hundred bytes each to show


@pytest.mark.usefixtures("traced")
def test_subscriber_and_rpc_server_start_stop_leave_nothing_behind(
    conn: Connection, unique_name: str, record_property: Callable[[str, object], None]
) -> None:
    queue = Queue(unique_name, durable=False, auto_delete=False)

    def subscriber(_i: int) -> None:
        Subscriber(conn, queue=queue, dead_letter_queue=f"{unique_name}.dead").open().close()

    def rpc_server(_i: int) -> None:
        server = RpcServer(conn, queue=queue, concurrency=2)
        server.register(lambda body: body, "echo", raw=True)
        server.start()
        server.close()

    try:
        for kind, cycle in (("subscriber", subscriber), ("rpc_server", rpc_server)):
            n, growth = _cycles(conn, cycle, budget=12, most=1000)
            _flat(kind, n, growth, record_property)
            assert n >= 100
    finally:
        ch = conn.channel()
        ch.delete_queue(queue.name)
        ch.delete_queue(f"{unique_name}.dead")
        ch.close()


# ------------------------------------------------------------------ row 13
def test_regression_row13_publish_in_a_done_callback_fails_at_once(
    conn: Connection, unique_name: str
) -> None:
    queue = Queue(unique_name, durable=False, auto_delete=True)
    pub = Publisher(conn, routing_key=queue.name, declare=[queue], timeout=5)
    seen: Future[tuple[bool, float, BaseException | None, BaseException | None]] = Future()

    def callback(_fut: Future[None]) -> None:
        on_io_thread = conn.io.in_io_thread
        started = time.monotonic()
        errors: list[BaseException | None] = []
        for attempt in (lambda: pub.publish(b"in a callback"), lambda: pub.publish_many([b"a"])):
            try:
                attempt()
                errors.append(None)
            except BaseException as exc:
                errors.append(exc)
        seen.set_result((on_io_thread, time.monotonic() - started, errors[0], errors[1]))

    with pub:
        sent = 0
        for _ in range(20):  # a future still pending when the callback is added
            fut = pub.publish_async(b"first")
            sent += 1
            if not fut.done():
                break
        fut.add_done_callback(callback)
        on_io_thread, took, single, many = seen.result(timeout=30)
        assert on_io_thread, "the callback must run on the thread that drives the connection"
        # was: the connection froze for the publisher's timeout, then OperationTimeout
        assert took < 0.5
        for error in (single, many):
            assert isinstance(error, PublishError), error
            assert "I/O thread" in str(error)
            assert "publish_async()" in str(error) and "another thread" in str(error)
        # nothing was sent from the callback, and the connection goes on at once
        started = time.monotonic()
        pub.publish(b"after")
        assert time.monotonic() - started < 1
        assert conn.channel().message_count(queue.name) == sent + 1  # "first"s and "after"


def _on_the_io_thread(pub: Publisher[Any], callback: Callable[[Future[None]], None]) -> int:
    """Run ``callback`` as a done-callback of a publish still pending (so on the I/O thread)."""
    sent = 0
    for _ in range(50):
        fut = pub.publish_async(b"first")
        sent += 1
        if not fut.done():
            break
    fut.add_done_callback(callback)
    return sent


def test_regression_row13_batch_in_a_done_callback_fails_at_once(
    conn: Connection, unique_name: str
) -> None:
    """``Publisher.batch()`` entered, or left, on the I/O thread: refused, nothing sent."""
    queue = Queue(unique_name, durable=False, auto_delete=True)
    outcome: Future[tuple[bool, float, list[BaseException | None]]] = Future()
    with Publisher(conn, routing_key=queue.name, declare=[queue], timeout=5) as pub:
        entered = pub.batch()
        entered.__enter__()  # on this thread: allowed, then left on the I/O thread
        entered.publish(b"in a batch left on the I/O thread")

        def callback(_fut: Future[None]) -> None:
            on_io_thread = conn.io.in_io_thread
            started = time.monotonic()
            errors: list[BaseException | None] = []

            def whole_batch() -> None:
                with pub.batch() as batch:
                    batch.publish(b"in a batch entered on the I/O thread")

            for attempt in (whole_batch, lambda: entered.__exit__(None, None, None)):
                try:
                    attempt()
                    errors.append(None)
                except BaseException as exc:
                    errors.append(exc)
            outcome.set_result((on_io_thread, time.monotonic() - started, errors))

        sent = _on_the_io_thread(pub, callback)
        on_io_thread, took, errors = outcome.result(timeout=30)
        assert on_io_thread
        # was: the connection froze for the batch's timeout, then OperationTimeout
        assert took < 0.5
        for error in errors:
            assert isinstance(error, PublishError), error
            assert "I/O thread" in str(error) and "another thread" in str(error)
        assert entered.result is None
        # the batch entered on the I/O thread sent nothing; the connection goes on
        pub.publish(b"after")
        entered.__exit__(None, None, None)  # off the I/O thread: settles as usual
        assert entered.result is not None and entered.result.confirmed == 1
        count = conn.channel().message_count
        assert wait_until(lambda: count(queue.name) == sent + 2, 5)


@pytest.mark.parametrize("driver", ["io-thread", "caller-pumping"])
def test_blocking_rpc_call_in_a_done_callback_is_refused_the_same_way(
    conn: Connection, unique_name: str, driver: str
) -> None:
    """Refused with the same words whichever thread drives the connection then.

    It once failed: the future was already settled when the callback was added, so the
    callback ran at once on the test's thread (driving nothing) and the call went out.
    """
    seen: Future[tuple[bool, BaseException | None]] = Future()
    queue = Queue(unique_name, durable=False, auto_delete=True)
    with (
        Publisher(conn, routing_key=queue.name, declare=[queue], timeout=5) as pub,
        RpcClient(conn, queue=f"{unique_name}.rpc") as client,
    ):

        def callback(_fut: Future[None]) -> None:
            driving = conn.io.in_io_thread
            try:
                client.call("nothing", timeout=5)
                seen.set_result((driving, None))
            except BaseException as exc:
                seen.set_result((driving, exc))

        _on_the_io_thread(pub, callback)
        if driver == "caller-pumping":
            # this thread reads the connection for its own confirm: the callback may run
            # here, while this thread drives it
            pub.publish(b"pumping")
        driving, error = seen.result(timeout=30)
        assert driving
        assert isinstance(error, RpcError), error
        assert str(error) == (
            "a blocking call cannot wait on the connection's I/O thread (a future's "
            "done-callback or a consumer callback runs there): nothing would read the "
            "broker's answer while it waits; use call_async() there, or call from another "
            "thread"
        )
