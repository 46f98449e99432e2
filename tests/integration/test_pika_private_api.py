"""pika's private API as hutch uses it, exercised on a real connection to a real broker.

hutch reaches below ``BlockingConnection``'s public API only in the helpers of
``hutch._amqp.pika_private`` (the list, with why, is in
docs/architecture.md, "Private pika access"). Each test here drives one of those helpers
with a real pika connection and checks the behaviour hutch relies on, so a pika release
that drops or changes it fails here, by name, instead of somewhere deep in the suite.
CI runs this file against the lowest and the newest pika that pyproject.toml allows.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.channel
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport

from hutch import Connection, Publisher, Queue
from hutch._amqp.pika_private import (
    MAX_IDLE,
    Alarm,
    ack,
    async_channel,
    coalesce,
    dispatch_events,
    has_events,
    idle_interval,
    io_until,
    output_pending,
    pika_fds,
    poke,
    publish,
    send_now,
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.rabbitmq_only("guards pika's private API on a real connection"),
]


@pytest.fixture
def raw(amqp_url: str) -> Iterator[pika.BlockingConnection]:
    """A plain pika connection (no hutch around it), heartbeats on."""
    params = pika.URLParameters(amqp_url)
    params.heartbeat = 30
    conn = pika.BlockingConnection(params)
    try:
        yield conn
    finally:
        if conn.is_open:
            conn.close()


@pytest.fixture
def queue(raw: pika.BlockingConnection, unique_name: str) -> Iterator[str]:
    ch = raw.channel()
    ch.queue_declare(unique_name, auto_delete=False)
    try:
        yield unique_name
    finally:
        if raw.is_open:
            raw.channel().queue_delete(unique_name)


def _transport(conn: pika.BlockingConnection) -> Any:
    return conn._impl._transport  # type: ignore[attr-defined]


def _drain_queue(ch: BlockingChannel, queue: str, n: int) -> list[bytes]:
    bodies: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(bodies) < n and time.monotonic() < deadline:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None or body is None:
            time.sleep(0.01)
            continue
        bodies.append(body)
    return bodies


# ---------------------------------------------------------------- BlockingChannel._impl


def test_async_channel_under_blocking_channel_publishes_with_pipelined_confirms(
    raw: pika.BlockingConnection, queue: str
) -> None:
    ch = raw.channel()
    impl = async_channel(ch)
    assert isinstance(impl, pika.channel.Channel)
    assert impl.channel_number == ch.channel_number
    acks: list[tuple[str, int, bool]] = []

    def on_confirm(frame: Any) -> None:
        m = frame.method
        acks.append((m.NAME, m.delivery_tag, m.multiple))

    impl.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _f: None)
    for i in range(5):  # no wait between them: the confirms come back pipelined
        impl.basic_publish("", queue, b"m%d" % i, pika.BasicProperties(), False)
    io_until(raw, lambda: bool(acks) and max(tag for _n, tag, _m in acks) >= 5)
    assert {name for name, _t, _m in acks} == {"Basic.Ack"}
    assert _drain_queue(ch, queue, 5) == [b"m%d" % i for i in range(5)]


def test_publish_sends_what_basic_publish_sends(raw: pika.BlockingConnection, queue: str) -> None:
    """publish: pika's frame size (_body_max_length) and output (_output_marshaled_frames)."""
    ch = raw.channel()
    impl = async_channel(ch)
    big = bytes(range(256)) * 1200  # 307,200 bytes: three body frames at frame_max 131,072
    props = pika.BasicProperties(
        content_type="application/json",
        correlation_id="c-1",
        delivery_mode=2,
        priority=3,
        headers={"k": "v", "n": 7, "list": [1, "two"], "nested": {"x": True}},
    )
    for body in (b"", b"small", big):
        impl.basic_publish("", queue, body, props, False)
        publish(impl, "", queue, body, props, False)
        send_now(raw)
        publish(impl, "", queue, body, props, False, now=True)  # straight to the socket
    send_now(raw)
    got: list[tuple[Any, bytes]] = []
    deadline = time.monotonic() + 10
    while len(got) < 9 and time.monotonic() < deadline:
        _method, p, fetched = ch.basic_get(queue, auto_ack=True)
        if p is not None and fetched is not None:
            got.append((p, fetched))
    assert [body for _p, body in got] == [b""] * 3 + [b"small"] * 3 + [big] * 3
    for p, _body in got:
        assert (p.content_type, p.correlation_id, p.delivery_mode, p.priority) == (
            "application/json",
            "c-1",
            2,
            3,
        )
        assert p.headers == {"k": "v", "n": 7, "list": [1, "two"], "nested": {"x": True}}
    # more than the socket takes at once: the rest is queued behind, and what is published
    # after it (straight to the socket or not) goes out after it, in order
    huge = os.urandom(8 * 1024 * 1024)
    publish(impl, "", queue, huge, props, False, now=True)
    assert output_pending(raw)  # the socket did not take 8 MiB at once
    publish(impl, "", queue, b"after-1", props, False, now=True)
    publish(impl, "", queue, b"after-2", props, False)
    io_until(raw)
    assert _drain_queue(ch, queue, 3) == [huge, b"after-1", b"after-2"]
    # mandatory goes in the method frame: an unroutable message comes back
    returned: list[bytes] = []
    impl.add_on_return_callback(lambda _c, _m, _p, body: returned.append(body))
    publish(impl, "", f"{queue}.nowhere", b"lost", pika.BasicProperties(), True)
    io_until(raw, lambda: bool(returned))
    assert returned == [b"lost"]


def test_ack_settles_what_basic_ack_settles(raw: pika.BlockingConnection, queue: str) -> None:
    """ack: the frame output as publish outputs it, queued or straight to the socket."""
    ch = raw.channel()
    for i in range(6):
        ch.basic_publish("", queue, b"%d" % i)
    ch.basic_qos(prefetch_count=6)
    got: list[Any] = []
    ch.basic_consume(queue, lambda _c, m, _p, _b: got.append(m.delivery_tag))
    while len(got) < 6:
        raw.process_data_events(0.1)
    impl = async_channel(ch)
    ack(impl, got[1], True)  # 1 and 2, queued
    ack(impl, got[2], False, now=True)  # 3, straight to the socket behind them
    io_until(raw)
    ack(impl, got[3], False, now=True)  # 4, straight to the socket
    ack(impl, got[5], True)  # 5 and 6
    ch.cancel()
    ok = ch.queue_declare(queue, passive=True)
    assert ok.method.message_count == 0  # every one settled, nothing requeued
    # an ack on a closed channel raises what pika raises
    ch.close()
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        ack(impl, 1, False, now=True)


def test_async_channel_returns_unroutable_mandatory_and_reports_close(
    raw: pika.BlockingConnection, unique_name: str
) -> None:
    ch = raw.channel()
    impl = async_channel(ch)
    returned: list[tuple[Any, bytes]] = []
    closed: list[Exception] = []
    impl.add_on_return_callback(
        lambda _c, method, _p, body: returned.append((method.reply_code, body))
    )
    impl.add_on_close_callback(lambda _c, reason: closed.append(reason))
    impl.basic_publish("", f"{unique_name}.nowhere", b"lost", pika.BasicProperties(), True)
    io_until(raw, lambda: bool(returned))
    assert returned == [(312, b"lost")]  # NO_ROUTE
    # a passive declare of a missing queue: the broker closes the channel (404)
    impl.queue_declare(f"{unique_name}.missing", passive=True)
    io_until(raw, lambda: bool(closed))
    assert isinstance(closed[0], pika.exceptions.ChannelClosedByBroker)
    assert closed[0].reply_code == 404


def test_async_channel_acks_and_nacks_deliveries(raw: pika.BlockingConnection, queue: str) -> None:
    ch = raw.channel()
    for i in range(4):
        ch.basic_publish("", queue, b"%d" % i)
    got: list[Any] = []
    ch.basic_consume(queue, lambda _c, m, _p, _b: got.append(m.delivery_tag))
    io_until(raw, lambda: has_events(raw))
    dispatch_events(raw)
    while len(got) < 4:
        raw.process_data_events(0.1)
    impl = async_channel(ch)
    impl.basic_ack(got[1], multiple=True)  # 1 and 2
    impl.basic_nack(got[2], requeue=False)  # dropped
    impl.basic_ack(got[3])
    ch.cancel()
    ok = ch.queue_declare(queue, passive=True)
    assert ok.method.message_count == 0  # nothing left unacked, nothing requeued


# ------------------------------------------------------- the connection's events and I/O


def test_pending_events_are_dispatched_on_request(raw: pika.BlockingConnection) -> None:
    """has_events/dispatch_events: pika queues callbacks and runs them only when asked."""
    ran: list[int] = []
    assert not has_events(raw)
    raw.add_callback_threadsafe(lambda: ran.append(1))  # a connection event
    io_until(raw, lambda: has_events(raw))
    assert ran == []  # queued, not run, until dispatched
    dispatch_events(raw)
    assert ran == [1]
    assert not has_events(raw)


def test_deliveries_wait_in_the_channel_dispatch_queue(
    raw: pika.BlockingConnection, queue: str
) -> None:
    ch = raw.channel()
    ch.basic_publish("", queue, b"hello")
    got: list[bytes] = []
    ch.basic_consume(queue, lambda _c, _m, _p, body: got.append(body), auto_ack=True)
    io_until(raw, lambda: has_events(raw))
    assert got == []
    dispatch_events(raw)
    assert got == [b"hello"]
    assert not has_events(raw)


def test_io_until_returns_when_a_waiter_is_true(raw: pika.BlockingConnection) -> None:
    fired: list[bool] = []
    raw.call_later(0.05, lambda: fired.append(True))  # a connection event once due
    start = time.monotonic()
    io_until(raw, lambda: has_events(raw))
    assert 0.03 <= time.monotonic() - start < 5
    io_until(raw)  # nothing to send, no waiter: returns at once
    assert time.monotonic() - start < 5


def test_pending_output_is_coalesced_and_sent_without_a_poll(
    raw: pika.BlockingConnection, queue: str
) -> None:
    ch = raw.channel()
    impl = async_channel(ch)
    transport = _transport(raw)
    # plain TCP takes the direct path (hutch._amqp.pika_private.send_now checks this class)
    assert isinstance(_transport(raw), _AsyncPlaintextTransport)
    assert not output_pending(raw)
    bodies = [b"%04d" % i + b"x" * 100 for i in range(50)]
    for body in bodies:
        impl.basic_publish("", queue, body, pika.BasicProperties(), False)
    assert output_pending(raw)  # pika queues frames until its poller runs
    size = transport.get_write_buffer_size()
    assert len(transport._tx_buffers) >= 50  # a buffer per frame, each sent on its own
    coalesce(raw)
    assert len(transport._tx_buffers) == 1  # joined: one send for the batch
    assert transport.get_write_buffer_size() == size  # nothing lost or doubled
    send_now(raw)  # hands it to the socket, no round of pika's poller
    assert not output_pending(raw)
    assert _drain_queue(ch, queue, 50) == bodies  # intact and in order


def test_large_output_is_coalesced_in_bounded_pieces(
    raw: pika.BlockingConnection, queue: str
) -> None:
    ch = raw.channel()
    impl = async_channel(ch)
    transport = _transport(raw)
    bodies = [b"%04d" % i + b"y" * 20_000 for i in range(40)]  # ~800 KB of frames
    for body in bodies:
        impl.basic_publish("", queue, body, pika.BasicProperties(), False)
    coalesce(raw)
    assert 2 <= len(transport._tx_buffers) < 80  # the first ~256 KiB joined, rest as is
    io_until(raw)  # the socket may be full: pika's poller sends the rest
    assert not output_pending(raw)
    assert _drain_queue(ch, queue, 40) == bodies


def test_poller_descriptors_are_the_broker_socket_and_the_interrupt(
    raw: pika.BlockingConnection, amqp_url: str
) -> None:
    socks, interrupt = pika_fds(raw)
    assert len(socks) == 1
    sock = socket.socket(fileno=os.dup(socks[0]))
    try:
        assert sock.getpeername()[1] == (urlsplit(amqp_url).port or 5672)
    finally:
        sock.close()
    # the interrupt is what add_callback_threadsafe (poke) rings, from any thread
    assert select.select([interrupt], [], [], 0)[0] == []
    threading.Thread(target=poke, args=(raw,)).start()
    assert select.select([interrupt], [], [], 5)[0] == [interrupt]
    raw.process_data_events(0)  # pika reads the interrupt and runs the no-op callback
    assert select.select([interrupt], [], [], 0)[0] == []


def test_idle_interval_is_the_time_to_the_next_timer_or_zero_for_callbacks(
    raw: pika.BlockingConnection,
) -> None:
    assert 0 < idle_interval(raw) <= MAX_IDLE  # heartbeat timer (30 s away), capped
    raw.call_later(0.3, lambda: None)
    assert 0.1 < idle_interval(raw) <= 0.3
    poke(raw)  # a pending callback: pika's poller would not sleep at all
    assert idle_interval(raw) == 0.0
    raw.process_data_events(0)
    assert idle_interval(raw) > 0.1


def test_pump_alarm_fires_by_its_deadline_and_is_reused(raw: pika.BlockingConnection) -> None:
    """Alarm: what ends a pumped wait; later waits reuse it, earlier ones get their own."""
    deadline = time.monotonic() + 0.2
    alarm = Alarm.by(raw, deadline, None)
    assert Alarm.by(raw, deadline + 1, alarm) is alarm  # fires early enough: reused
    earlier = Alarm.by(raw, deadline - 0.1, alarm)
    assert earlier is not alarm
    assert 0.05 < idle_interval(raw) <= 0.1  # the idle I/O thread would wake for it
    io_until(raw, lambda: earlier.fired)
    assert not alarm.fired
    io_until(raw, lambda: alarm.fired)
    assert time.monotonic() >= deadline - 0.01
    assert Alarm.by(raw, deadline + 1, alarm) is not alarm  # a fired one is not reused


def test_pumped_waits_leave_no_cancelled_timers_in_pika(conn: Connection, unique_name: str) -> None:
    """Confirmed publishes pump their own waits and cancel no pika timer to do so.

    pika leaves a cancelled timer in its heap until it comes due; hutch used to cancel one
    per confirmed publish and then pop them off pika's heap itself (a write into pika).
    """
    q = Queue(unique_name, auto_delete=True)
    with Publisher(conn, routing_key=q.name, declare=[q]) as pub:
        for i in range(30):
            pub.publish(b"%d" % i)  # confirmed, each waits for its confirm on this thread

    def cancelled_ahead() -> int:
        # a pumped wait lasts 0.5 s at most; pika's own connect timeouts (cancelled once
        # connected, 10 s and more ahead) are not hutch's
        ioloop: Any = conn.io.pika_connection()._impl.ioloop  # type: ignore[attr-defined]
        now = time.monotonic()
        heap = ioloop._timer._timeout_heap
        return sum(1 for t in heap if t.callback is None and now < t.deadline <= now + 1)

    assert conn.io.call(cancelled_ahead, 5) == 0
