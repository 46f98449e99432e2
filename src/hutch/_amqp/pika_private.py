"""Every use of pika below its public API, one small named function each.

Nothing else in hutch touches a private pika attribute. Each item is guarded by a test of
behaviour (tests/unit/test_pika_private_api.py, tests/integration/test_pika_private_api.py),
never by matching pika's source text, and CI runs the lowest and newest pika 1.x allowed.
See docs/architecture.md ("Private pika access") for why each exists and what it is worth.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.channel
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport as _PlainTransport

from hutch._amqp.frames import ack_frame, publish_frames

__all__ = [
    "MAX_IDLE",
    "Alarm",
    "ack",
    "async_channel",
    "coalesce",
    "dispatch_events",
    "has_events",
    "idle_interval",
    "io_until",
    "output_pending",
    "pika_fds",
    "poke",
    "publish",
    "register_properties_class",
    "send_now",
]

log = logging.getLogger("hutch")


MAX_IDLE = 1.0  # longest idle wait of the I/O thread between checks, seconds


def _noop() -> None:
    return None  # what poke() queues: waking the poller is the point


def poke(conn: pika.BlockingConnection) -> None:
    """Interrupt whichever thread waits in ``conn``'s poller (thread-safe, even closed).

    Private pika: ``BlockingConnection._impl`` (read), then the IOLoop's public
    ``add_callback_threadsafe`` (call). Guarded by
    ``test_poller_descriptors_are_the_broker_socket_and_the_interrupt`` (integration) and
    ``test_callback_threadsafe_rings_the_poller_interrupt`` (unit).
    """
    conn._impl.ioloop.add_callback_threadsafe(_noop)  # type: ignore[attr-defined]


def pika_fds(conn: pika.BlockingConnection) -> tuple[list[int], int]:
    """The descriptors pika's poller watches: its sockets to the broker, its interrupt.

    Private pika: ``ioloop._poller``, ``_r_interrupt``, ``_fd_handlers`` (read). Guarded by
    ``test_poller_descriptors_are_the_broker_socket_and_the_interrupt`` (integration) and
    ``test_callback_threadsafe_rings_the_poller_interrupt`` (unit).
    """
    poller = conn._impl.ioloop._poller  # type: ignore[attr-defined]
    interrupt: int = poller._r_interrupt.fileno()
    return [fd for fd in poller._fd_handlers if fd != interrupt], interrupt


def output_pending(conn: pika.BlockingConnection) -> bool:
    """True while pika holds output the socket did not take yet.

    Private pika: ``SelectConnection._transport`` and its ``get_write_buffer_size()``
    (read). Guarded by ``test_pending_output_is_coalesced_and_sent_without_a_poll``
    (integration).
    """
    transport = conn._impl._transport  # type: ignore[attr-defined]
    return transport is not None and bool(transport.get_write_buffer_size())


def has_events(conn: pika.BlockingConnection) -> bool:
    """True when pika holds callbacks ready to dispatch (deliveries, timers, alarms).

    Private pika: ``BlockingConnection._channels_pending_dispatch``, ``_ready_events``
    (read). Guarded by ``test_pending_events_are_dispatched_on_request`` and
    ``test_deliveries_wait_in_the_channel_dispatch_queue`` (integration).
    """
    return bool(conn._channels_pending_dispatch or conn._ready_events)  # type: ignore[attr-defined]


def dispatch_events(conn: pika.BlockingConnection) -> None:
    """Dispatch ready callbacks, as ``process_data_events`` does after its poll.

    Private pika: ``_dispatch_connection_events()``, ``_dispatch_channel_events()`` (call).
    Guarded by ``test_pending_events_are_dispatched_on_request`` and
    ``test_deliveries_wait_in_the_channel_dispatch_queue`` (integration).
    """
    conn._dispatch_connection_events()  # type: ignore[attr-defined]
    conn._dispatch_channel_events()  # type: ignore[attr-defined]


def coalesce(conn: pika.BlockingConnection) -> None:
    """Join pika's pending output into one buffer.

    pika queues every frame as a buffer of its own and hands them to the socket one
    ``send`` at a time: three system calls per message. Joined, a batch goes out in one.
    Only the owner of the connection calls this, never while pika is sending.

    Private pika: ``transport._tx_buffers`` (**read and write**: pops the queued frames,
    pushes one joined buffer back). Kept for speed (figures in docs/architecture.md).
    Guarded by ``test_pending_output_is_coalesced_and_sent_without_a_poll`` and
    ``test_large_output_is_coalesced_in_bounded_pieces`` (integration).
    """
    transport = conn._impl._transport  # type: ignore[attr-defined]
    buffers = getattr(transport, "_tx_buffers", None)
    if buffers is None or len(buffers) < 2:
        return
    # at most ~256 KiB at a time: pika re-slices a partly sent buffer, which would make a
    # huge one cost quadratic copying on a slow socket
    joined: list[bytes] = []
    size = 0
    while buffers and size < 262_144:
        chunk = buffers.popleft()
        joined.append(chunk)
        size += len(chunk)
    buffers.appendleft(b"".join(joined))


def send_now(conn: pika.BlockingConnection) -> None:
    """Hand pending output to the socket at once, without a round of pika's poller.

    The socket nearly always has room: this saves the poll that pika would spend to learn
    so (a round of its event loop, per confirmed publish or RPC request). What the socket
    does not take stays queued for the poller, exactly as pika leaves it. Plain TCP only:
    TLS keeps its own write state machine.

    Private pika: the ``_AsyncPlaintextTransport`` class (read) and its
    ``_on_socket_writable()`` (call: pika's own handler, which keeps its state). Guarded by
    ``test_pending_output_is_coalesced_and_sent_without_a_poll`` (integration).
    """
    coalesce(conn)
    transport = conn._impl._transport  # type: ignore[attr-defined]
    if isinstance(transport, _PlainTransport) and transport.get_write_buffer_size():
        transport._on_socket_writable()  # type: ignore[attr-defined]


def io_until(conn: pika.BlockingConnection, *waiters: Callable[[], bool]) -> None:
    """Do I/O until output is flushed and (if given) one of ``waiters`` is true.

    Private pika: ``BlockingConnection._flush_output`` (call). Guarded by
    ``test_io_until_returns_when_a_waiter_is_true`` (integration).
    """
    coalesce(conn)
    conn._flush_output(*waiters)  # type: ignore[attr-defined]


def idle_interval(conn: pika.BlockingConnection) -> float:
    """Seconds until pika's next callback or timer (heartbeats), at most :data:`MAX_IDLE`.

    Read only: it asks pika's IOLoop what its own poller would wait for. Without holding
    the connection pika may change its timers meanwhile; callers catch what that raises.
    hutch cancels no timers on the hot paths (see :class:`Alarm`), so the timer on top is
    nearly always a live one worth waking for.

    Private pika: ``ioloop._get_remaining_interval()`` (read). Guarded by
    ``test_idle_interval_is_the_time_to_the_next_timer_or_zero_for_callbacks``
    (integration) and ``test_remaining_interval_is_what_the_poller_would_sleep`` (unit).
    """
    interval = conn._impl.ioloop._get_remaining_interval()  # type: ignore[attr-defined]
    return MAX_IDLE if interval is None else min(max(0.0, float(interval)), MAX_IDLE)


class Alarm:
    """The pika timer that ends a pumped wait by its deadline; fires, is never cancelled.

    pika cancels a timer by marking it and leaves it in its heap until it comes due; an
    idle I/O thread would wake for each mark (one per pumped wait, thousands a second)
    unless hutch removed them from pika's heap itself. So a pumped wait's timer is not
    cancelled: the next wait reuses it while it fires no later than that wait's deadline
    (pumped waits are short and back to back), and one no longer needed just fires.

    Private pika: ``BlockingConnection._impl.ioloop`` (read), then its public ``call_later``
    (call; ``ValueError`` once pika closed its timers). Guarded by
    ``test_pump_alarm_fires_by_its_deadline_and_is_reused``,
    ``test_pumped_waits_leave_no_cancelled_timers_in_pika`` (integration) and
    ``test_timers_fire_in_process_timeouts_and_closed_timers_refuse`` (unit).
    """

    __slots__ = ("deadline", "fired", "ioloop")

    def __init__(self, ioloop: object, deadline: float) -> None:
        self.ioloop = ioloop
        self.deadline = deadline
        self.fired = False

    def fire(self) -> None:
        self.fired = True

    @classmethod
    def by(cls, conn: pika.BlockingConnection, deadline: float, last: Alarm | None) -> Alarm:
        """``last`` if it is pending on ``conn`` and fires by ``deadline``, else a new one."""
        ioloop = conn._impl.ioloop  # type: ignore[attr-defined]
        pending = last is not None and last.ioloop is ioloop and not last.fired
        if pending and last is not None and last.deadline <= deadline:
            return last
        alarm = cls(ioloop, deadline)
        ioloop.call_later(max(0.0, deadline - time.monotonic()), alarm.fire)
        return alarm


def async_channel(ch: BlockingChannel) -> pika.channel.Channel:
    """The asynchronous pika channel under a BlockingChannel.

    hutch publishes, acks and tracks confirms on it directly so that confirms can be
    pipelined. Private pika: ``BlockingChannel._impl`` (read). Guarded by
    ``test_async_channel_under_blocking_channel_publishes_with_pipelined_confirms``,
    ``test_async_channel_returns_unroutable_mandatory_and_reports_close``,
    ``test_async_channel_acks_and_nacks_deliveries`` (integration) and
    ``test_blocking_classes_have_what_hutch_calls`` (unit).
    """
    return ch._impl  # type: ignore[attr-defined,no-any-return]


def register_properties_class(cls: type[pika.spec.BasicProperties]) -> None:
    """Make pika decode every content header's properties with ``cls`` (process-wide).

    Private pika: ``pika.spec.props`` (**write**, once at import, process-wide):
    ``pika.frame.decode_frame`` looks the class up there. Guarded by
    ``test_pika_decodes_content_headers_through_hutchs_guarded_properties`` (unit) and the
    hostile-input tests (an undecodable header reaches the consumer as
    ``UndecodableHeaders`` instead of killing the connection).
    """
    pika.spec.props[pika.spec.BasicProperties.INDEX] = cls


def publish(
    impl: pika.channel.Channel,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: pika.BasicProperties,
    mandatory: bool,
    *,
    now: bool = False,
) -> None:
    """``impl.basic_publish(...)``: the same frames and errors, output in one write.

    The frames come from :func:`hutch._amqp.frames.publish_frames` (pika's bytes, with
    the method frame cached and no frame objects); a channel that is not open takes
    pika's own path, which raises what it raises. With ``now`` (a caller waiting for the
    answer: an RPC reply or request, a confirmed publish) they go straight to the socket
    when pika holds no output before them, so pika neither registers nor removes its
    writer for them; what the socket does not take is queued behind, as pika would.
    Without ``now`` they are queued for the next send, so a batch goes out together.

    Private pika: ``Connection._body_max_length`` (read), ``Connection.bytes_sent`` (read
    and write: pika's statistics, kept right),
    ``Connection._output_marshaled_frames`` (call), and for ``now`` the plain transport's
    ``_tx_buffers``, ``_state`` and ``_sock`` (read). Guarded by
    ``test_publish_sends_what_basic_publish_sends`` (integration).
    """
    conn = impl.connection
    body_max = getattr(conn, "_body_max_length", None)
    if not impl.is_open or not body_max:
        impl.basic_publish(exchange, routing_key, body, properties, mandatory)
        return
    data = publish_frames(
        impl.channel_number, exchange, routing_key, body, properties, mandatory, body_max
    )
    _output(conn, data, now)


def ack(
    impl: pika.channel.Channel, delivery_tag: int, multiple: bool, *, now: bool = False
) -> None:
    """``impl.basic_ack(delivery_tag, multiple)``, output as :func:`publish` does.

    ``now``: straight to the socket when pika holds no output (an RPC server's ack right
    after its reply, which went the same way). A channel or connection that is not open
    takes pika's own path, which raises what it raises.

    Private pika: as :func:`publish`. Guarded by ``test_ack_settles_what_basic_ack_settles``
    (integration).
    """
    conn = impl.connection
    if not impl.is_open or conn.is_closed:
        impl.basic_ack(delivery_tag, multiple)
        return
    _output(conn, ack_frame(impl.channel_number, delivery_tag, multiple), now)


def _output(conn: Any, data: bytes, now: bool) -> None:
    """Hand marshalled frames to pika's connection; with ``now``, to the socket first."""
    if now:
        sock = _idle_plain_socket(conn)
        if sock is not None:
            try:
                sent = sock.send(data)
            except OSError:  # would block, or the connection broke: pika's writer meets it
                sent = 0
            conn.bytes_sent += sent
            if sent == len(data):
                return
            data = data[sent:]
    conn._output_marshaled_frames((data,))


def _idle_plain_socket(conn: Any) -> Any:
    """The socket of a plain TCP transport that holds no output and is active, or None."""
    transport: Any = conn._transport
    if type(transport) is not _PlainTransport:
        return None
    t: Any = transport  # Any again: the check above narrowed `transport` to pika's class
    if t._tx_buffers or t._state != t._STATE_ACTIVE:
        return None
    return t._sock
