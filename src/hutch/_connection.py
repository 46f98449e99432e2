"""The connection and its I/O thread: the one place that drives pika's connection objects.

Threading model
---------------
pika's ``BlockingConnection`` is not thread-safe and only answers heartbeats while it is
being called into. hutch guards every :class:`Connection` with a lock that whoever calls
into pika must hold (see :attr:`IoLoop.in_io_thread`), and gives it one I/O thread that
does the connection's I/O whenever nobody else does, so heartbeats keep flowing no matter
what user code does. The idle I/O thread waits for the socket *without* the lock, so a
thread that needs the broker now (a confirmed publish, a blocking RPC call) takes the
connection and does its own I/O (:meth:`IoLoop.run_and_pump`) instead of handing work over
and waiting to be woken. Work nobody waits for is handed to :meth:`IoLoop.submit`, and
runs in submission order. Handlers never run inside pika's callbacks.

When the connection is lost the I/O thread reconnects with backoff (see
:class:`~hutch.RecoveryPolicy`), and every channel re-declares its topology, restores its
QoS and consumers and republishes what was not yet confirmed.
"""

from __future__ import annotations

import itertools
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import pika
import pika.exceptions as pex
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport as _PlainTransport

from hutch._checks import check_timeout
from hutch._exceptions import (
    AccessRefused,
    AuthenticationError,
    ChannelClosed,
    ClosedError,
    ConnectError,
    ConnectionBlocked,
    ConnectionLost,
    HutchError,
    NotFound,
    OperationTimeout,
    PreconditionFailed,
)
from hutch._resource import Resource
from hutch._settings import Address, ConnectionSettings, RecoveryPolicy

if TYPE_CHECKING:
    from typing_extensions import Self

    from hutch._channel import Channel

__all__ = ["Connection", "connect"]

log = logging.getLogger("hutch")

R = TypeVar("R")

_names = itertools.count(1)


def map_pika_error(exc: BaseException, *, entity: str = "") -> HutchError:
    """Translate a pika exception into hutch's hierarchy (most specific first).

    Args:
        exc: The exception pika raised.
        entity: What was being acted on, for the error message (e.g. ``"queue 'q'"``).

    Returns:
        The hutch exception to raise ``from exc``.
    """
    if isinstance(exc, HutchError):
        return exc
    if isinstance(exc, (pex.ProbableAuthenticationError, pex.AuthenticationError)):
        return AuthenticationError(
            "the broker refused the credentials (ACCESS_REFUSED): check user name and password"
        )
    if isinstance(exc, pex.ProbableAccessDeniedError):
        return AuthenticationError(
            "the broker refused access to the virtual host: "
            "check the vhost and the user's permissions"
        )
    if isinstance(exc, pex.ConnectionClosedByBroker) and exc.reply_code in (403, 530):
        # 403 ACCESS_REFUSED, 530 NOT_ALLOWED (e.g. the vhost is gone): retrying cannot help
        return AuthenticationError(f"the broker refused the connection: {exc.reply_text}")
    if isinstance(exc, pex.ConnectionBlockedTimeout):
        return ConnectionBlocked("the broker blocked the connection for too long (resource alarm)")
    if isinstance(exc, pex.ChannelClosed):
        code, text = exc.reply_code, exc.reply_text
        if code == 406:
            return PreconditionFailed(code, text, **_describe_406(text, entity))
        if code == 404:
            return NotFound(code, text, message=f"{entity or 'entity'} not found ({code} {text})")
        if code == 403:
            return AccessRefused(code, text)
        return ChannelClosed(code, text)
    if isinstance(exc, (pex.AMQPConnectionError, OSError)):
        return ConnectionLost(f"connection lost: {type(exc).__name__}: {exc}")
    return HutchError(f"unexpected pika error: {type(exc).__name__}: {exc}")


def _describe_406(text: str, entity: str) -> dict[str, str]:
    # e.g. "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/':
    #       received 'false' but current is 'true'"
    body = text.split(" - ", 1)[-1]
    if " for " in body and "inequivalent arg" in body:
        arg, _, rest = body.partition(" for ")
        ent, _, tail = rest.partition(" in vhost ")
        detail = tail.split(":", 1)[1].strip() if ":" in tail else ""
        return {
            "entity": ent.strip() or entity,
            "differences": f"{arg.strip()}: {detail}".strip(": "),
        }
    return {"entity": entity, "differences": body}


# --------------------------------------------------------------------------------------
# pika internals. hutch reaches below BlockingConnection's public API in exactly these
# helpers (and in _channel._async_channel), listed in docs/architecture.md; the behaviour
# tests in tests/{unit,integration}/test_pika_private_api.py fail if a pika release
# changes any of them. Nothing here writes pika's timers or counters.

_MAX_IDLE = 1.0  # longest idle wait of the I/O thread between checks, seconds


def _noop() -> None:
    return None


def _poke(conn: pika.BlockingConnection) -> None:
    """Interrupt whichever thread waits in ``conn``'s poller (thread-safe, even closed)."""
    conn._impl.ioloop.add_callback_threadsafe(_noop)  # type: ignore[attr-defined]


def _pika_fds(conn: pika.BlockingConnection) -> tuple[list[int], int]:
    """The descriptors pika's poller watches: its sockets to the broker, its interrupt."""
    poller = conn._impl.ioloop._poller  # type: ignore[attr-defined]
    interrupt: int = poller._r_interrupt.fileno()
    return [fd for fd in poller._fd_handlers if fd != interrupt], interrupt


def _output_pending(conn: pika.BlockingConnection) -> bool:
    """True while pika holds output the socket did not take yet."""
    transport = conn._impl._transport  # type: ignore[attr-defined]
    return transport is not None and bool(transport.get_write_buffer_size())


class _Watch:
    """What the idle I/O thread waits on, without holding the connection.

    Its own epoll set over pika's socket and interrupt descriptors and hutch's wake-up
    socket. While a caller drives the connection the socket is *muted* here: the caller
    reads what comes in, and the I/O thread must not wake (and compete for the GIL and
    the connection) for it. Unmuting re-arms it; level triggering then wakes the I/O
    thread at once if something arrived that the caller left unread. Without epoll (not
    Linux) it falls back to ``select`` on the same descriptors, unmuted, re-checking often.
    """

    def __init__(self, conn: pika.BlockingConnection, wake_fd: int) -> None:
        self.socks, self.interrupt = _pika_fds(conn)
        self.wake_fd = wake_fd
        self.output = False
        self.muted = False
        self.ep: Any = None
        if hasattr(select, "epoll"):
            self.ep = select.epoll()
            for fd in (*self.socks, self.interrupt, wake_fd):
                self.ep.register(fd, select.EPOLLIN)

    def _arm(self, events: int) -> None:
        for fd in self.socks:
            try:
                self.ep.modify(fd, events)
            except OSError:
                pass  # the socket closed with the connection; pika will say so

    def mute(self) -> None:
        if self.ep is not None and not self.muted:
            self.muted = True
            self._arm(0)

    def unmute(self) -> None:
        if self.ep is not None and self.muted:
            self.muted = False
            self._arm(select.EPOLLIN | (select.EPOLLOUT if self.output else 0))

    def want_output(self, pending: bool) -> None:
        """Also wake when the socket can take more (pika holds output)."""
        if pending != self.output:
            self.output = pending
            if self.ep is not None and not self.muted:
                self._arm(select.EPOLLIN | (select.EPOLLOUT if pending else 0))

    def wait(self, timeout: float) -> tuple[bool, bool]:
        """Wait up to ``timeout`` s; returns (pika has I/O ready, the wake-up socket rang)."""
        if self.ep is not None:
            ready = [fd for fd, _ in self.ep.poll(timeout)]
        else:
            readable = [*self.socks, self.interrupt, self.wake_fd]
            writable = self.socks if self.output else []
            r, w, _ = select.select(readable, writable, [], min(timeout, 0.01) if timeout else 0)
            ready = [*r, *w]
        woken = self.wake_fd in ready
        return len(ready) > int(woken), woken

    def close(self) -> None:
        if self.ep is not None:
            self.ep.close()


def _has_events(conn: pika.BlockingConnection) -> bool:
    """True when pika holds callbacks ready to dispatch (deliveries, timers, alarms)."""
    return bool(conn._channels_pending_dispatch or conn._ready_events)  # type: ignore[attr-defined]


def _dispatch(conn: pika.BlockingConnection) -> None:
    """Dispatch ready callbacks, as ``process_data_events`` does after its poll."""
    conn._dispatch_connection_events()  # type: ignore[attr-defined]
    conn._dispatch_channel_events()  # type: ignore[attr-defined]


def _coalesce(conn: pika.BlockingConnection) -> None:
    """Join pika's pending output into one buffer.

    pika queues every frame as a buffer of its own and hands them to the socket one
    ``send`` at a time: three system calls per message. Joined, a batch goes out in one.
    Only the owner of the connection calls this, never while pika is sending.
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


def _send_now(conn: pika.BlockingConnection) -> None:
    """Hand pending output to the socket at once, without a round of pika's poller.

    The socket nearly always has room: this saves the poll that pika would spend to learn
    so (a round of its event loop, per confirmed publish or RPC request). What the socket
    does not take stays queued for the poller, exactly as pika leaves it. Plain TCP only:
    TLS keeps its own write state machine.
    """
    _coalesce(conn)
    transport = conn._impl._transport  # type: ignore[attr-defined]
    if isinstance(transport, _PlainTransport) and transport.get_write_buffer_size():
        transport._on_socket_writable()  # type: ignore[attr-defined]


def _io_until(conn: pika.BlockingConnection, *waiters: Callable[[], bool]) -> None:
    """Do I/O until output is flushed and (if given) one of ``waiters`` is true."""
    _coalesce(conn)
    conn._flush_output(*waiters)  # type: ignore[attr-defined]


def _idle_interval(conn: pika.BlockingConnection) -> float:
    """Seconds until pika's next callback or timer (heartbeats), at most :data:`_MAX_IDLE`.

    Read only: it asks pika's IOLoop what its own poller would wait for. Without holding
    the connection pika may change its timers meanwhile; callers catch what that raises.
    hutch cancels no timers on the hot paths (see :class:`_Alarm`), so the timer on top is
    nearly always a live one worth waking for.
    """
    interval = conn._impl.ioloop._get_remaining_interval()  # type: ignore[attr-defined]
    return _MAX_IDLE if interval is None else min(max(0.0, float(interval)), _MAX_IDLE)


class _Alarm:
    """The pika timer that ends a pumped wait by its deadline; fires, is never cancelled.

    pika cancels a timer by marking it and leaves it in its heap until it comes due; an
    idle I/O thread would wake for each mark (one per pumped wait, thousands a second)
    unless hutch removed them from pika's heap itself. So a pumped wait's timer is not
    cancelled: the next wait reuses it while it fires no later than that wait's deadline
    (pumped waits are short and back to back), and one no longer needed just fires.
    """

    __slots__ = ("deadline", "fired", "ioloop")

    def __init__(self, ioloop: object, deadline: float) -> None:
        self.ioloop = ioloop
        self.deadline = deadline
        self.fired = False

    def fire(self) -> None:
        self.fired = True

    @classmethod
    def by(cls, conn: pika.BlockingConnection, deadline: float, last: _Alarm | None) -> _Alarm:
        """``last`` if it is pending on ``conn`` and fires by ``deadline``, else a new one."""
        ioloop = conn._impl.ioloop  # type: ignore[attr-defined]
        pending = last is not None and last.ioloop is ioloop and not last.fired
        if pending and last is not None and last.deadline <= deadline:
            return last
        alarm = cls(ioloop, deadline)
        ioloop.call_later(max(0.0, deadline - time.monotonic()), alarm.fire)
        return alarm


_CONNECTION_ERRORS = (pex.AMQPConnectionError, pex.ConnectionWrongStateError, OSError)
#: Longest wait of a failed open() for its I/O thread to end (its attempt ends by the
#: open's deadline, so this is only slack for pika to unwind).
_OPEN_GRACE = 2.0


class IoLoop:
    """Owns the pika connection on a dedicated thread and runs closures submitted to it.

    Internal: used by :class:`Connection` and the channel layer.
    """

    def __init__(self, settings: ConnectionSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        self._pika: pika.BlockingConnection | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._tasks: deque[Callable[[], None]] = deque()
        self._wake_pending = False
        self._wake = threading.Event()
        self._opened: Future[None] = Future()
        self._closing = False
        self._closed = threading.Event()
        self._failure: HutchError | None = None
        self._channels: list[Channel] = []
        self._unblocked = threading.Event()
        self._unblocked.set()
        self._blocked_at = 0.0
        self._down_since: float | None = None
        self._downtime = 0.0
        self._address_index = 0
        self._listeners: list[Callable[[str, BaseException | None], None]] = []
        self.connected_address: Address | None = None
        self.recoveries = 0
        # Whoever holds _own drives pika: the I/O thread, or a caller doing its own I/O
        # (see run_direct and pump). _owner is that thread's ident.
        self._own = threading.Lock()
        self._owner: int | None = None
        self._pumping = 0
        self._want = 0
        self._alarm: _Alarm | None = None  # ends pumped waits; only the owner touches it
        self._broken: BaseException | None = None
        self._parked = False
        self._watch: _Watch | None = None
        self._io_ident: int | None = None  # the I/O thread's
        # the first connection must be open by then (open(timeout)); None: no limit
        self._open_deadline: float | None = None
        self._open_timeout: float | None = None
        # wakes the idle I/O thread without pika (created by start())
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # ----------------------------------------------------------------- any thread
    @property
    def in_io_thread(self) -> bool:
        """True when the calling thread drives the connection right now.

        That is the I/O thread while it handles I/O, or a caller inside
        :meth:`run_direct` or :meth:`pump`: pika callbacks (consumers, confirms) run there.
        """
        return self._owner == threading.get_ident()

    @property
    def is_open(self) -> bool:
        """True while the connection is usable (possibly recovering)."""
        return self._opened.done() and not self._closing and self._failure is None

    @property
    def failure(self) -> HutchError | None:
        """The error that ended the connection for good, if any."""
        return self._failure

    def start(self, timeout: float | None) -> None:
        """Start the I/O thread and wait until the first connection is open.

        An open that fails or runs out of time leaves nothing behind: the I/O thread's
        connection attempts end by the same deadline, and a connection that still got
        through is closed at once (the loop is closing for good).

        Raises:
            OperationTimeout: The connection was not open within ``timeout`` seconds.
            ConnectError: No address could be reached (or the credentials were refused).
        """
        if self._thread is None:
            if timeout is not None:
                self._open_timeout = timeout
                self._open_deadline = time.monotonic() + timeout
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._thread = threading.Thread(
                target=self._run, name=f"hutch-io-{self.name}", daemon=True
            )
            self._thread.start()
            self._io_ident = self._thread.ident
        try:
            self._opened.result(timeout)
        except FutureTimeout:
            # give up on this connection for good: the attempt in progress ends by the
            # same deadline, and one that got through is closed by the closing loop
            self._closing = True
            self._wake_io()
            self._join_failed_open()
            raise OperationTimeout(f"connecting took longer than {timeout} s") from None
        except HutchError:
            self._join_failed_open()
            raise

    def _join_failed_open(self) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_OPEN_GRACE)
            if thread.is_alive():
                log.debug("hutch: %r still ends a connection attempt in the background", self.name)

    def blocking_refused(self, what: str, instead: str) -> str | None:
        """Why ``what``, which waits for the broker, must not run here; None if it may.

        On the thread that drives the connection (the I/O thread, or a caller reading
        it), in a future's done-callback or a consumer callback say, a blocking call
        would wait for an answer that only this very thread could read: refused at once.

        Args:
            what: The blocking call, e.g. ``"a confirmed publish"``.
            instead: What to do instead.

        Returns:
            The error message to raise, or None when the calling thread may block.
        """
        if not self.in_io_thread:
            return None
        return (
            f"{what} cannot wait on the connection's I/O thread (a future's done-callback or "
            "a consumer callback runs there): nothing would read the broker's answer while "
            f"it waits; {instead}"
        )

    def check_usable(self) -> None:
        """Raise if the connection was closed or failed for good."""
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise ClosedError("the connection is closed")
        if self._thread is None:
            raise ClosedError(
                "the connection is not open: call open() or use it as a context manager"
            )

    def submit(self, task: Callable[[], None]) -> None:
        """Queue ``task`` to run on the I/O thread (in submission order)."""
        with self._lock:
            self._tasks.append(task)
            if self._wake_pending:
                return
            self._wake_pending = True
        self._wake.set()
        thread = self._thread
        if thread is not None and self._owner == self._io_ident:
            # the I/O thread is at work: it looks at the queue again before it idles
            # (_serve, _idle), so waking it would only cost a system call
            return
        conn = self._pika
        if conn is not None:
            try:
                _poke(conn)  # wakes the idle I/O thread, or makes a pumping caller drain
            except (AttributeError, OSError):
                self._wake_io()
        else:
            self._wake_io()  # the loop drains queued tasks after recovery or fails them

    def call(self, fn: Callable[[], R], timeout: float | None) -> R:
        """Run ``fn`` on the I/O thread and return its result (inline on the I/O thread).

        Raises:
            OperationTimeout: ``fn`` did not finish within ``timeout`` seconds.
        """
        if self.in_io_thread:
            return fn()
        self.check_usable()
        if self._direct_ok():
            if not self._acquire(timeout, want=True):
                raise OperationTimeout(
                    f"broker operation did not start within {timeout} s: the connection is busy"
                )
            try:
                if self._direct_ok():
                    return self._direct(fn)
            except _CONNECTION_ERRORS:
                pass  # the connection just died: run fn again once it is back, as below
            finally:
                self._release()
        fut: Future[R] = Future()

        def task() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self.submit(task)
        try:
            return fut.result(timeout)
        except FutureTimeout as exc:
            if isinstance(exc, HutchError):
                raise
            fut.cancel()
            raise OperationTimeout(f"broker operation did not finish within {timeout} s") from None

    # ------------------------------------------------- callers driving the connection
    # The I/O thread holds the connection (_own) only while it has I/O to do; when idle it
    # waits on pika's poller descriptor without it. A caller that needs the broker can
    # therefore take the connection and do the I/O itself (run_direct, pump) instead of
    # handing work to the I/O thread and waiting to be woken: two thread hand-overs fewer
    # per confirmed publish or RPC call. A caller that must wait for the connection sets
    # _want, which makes a pumping caller give it up.

    def _direct_ok(self) -> bool:
        conn = self._pika
        return (
            conn is not None
            and self._broken is None
            and self._down_since is None
            and not self._closing
            and self._opened.done()
            and self._unblocked.is_set()
            and not conn.is_closed
        )

    def _acquire(self, timeout: float | None, *, want: bool) -> bool:
        own = self._own
        if own.acquire(blocking=False):
            self._took()
            return True
        if want:
            with self._lock:
                self._want += 1
            conn = self._pika
            if self._pumping and conn is not None:
                try:
                    _poke(conn)
                except (AttributeError, OSError):
                    pass
        try:
            ok = own.acquire(timeout=-1 if timeout is None else max(0.0, timeout))
        finally:
            if want:
                with self._lock:
                    self._want -= 1
        if ok:
            self._took()
        return ok

    def _took(self) -> None:
        # just acquired _own
        me = self._owner = threading.get_ident()
        watch = self._watch
        if watch is not None and me != self._io_ident:
            watch.mute()

    def _release(self) -> None:
        watch = self._watch
        if watch is not None and self._owner != self._io_ident:
            watch.unmute()
        self._owner = None
        self._own.release()
        if self._parked:
            self._wake_io()  # the I/O thread waits for the connection to be free

    def _direct(self, fn: Callable[[], R]) -> R:
        # holding _own: run what was queued before (order), then fn, then send its output
        conn = self._pika
        assert conn is not None
        try:
            self._drain_queued()
            result = fn()
        except _CONNECTION_ERRORS as exc:
            self._mark_broken(exc)
            raise
        except BaseException:
            self._leave_quietly(conn)
            raise
        # fn is done (a consume started, a message fetched): whatever happens next must
        # not make the caller run it again
        self._leave_quietly(conn)
        return result

    def _leave_quietly(self, conn: pika.BlockingConnection) -> None:
        try:
            self._leave(conn)
        except _CONNECTION_ERRORS as exc:
            self._mark_broken(exc)

    def _leave(self, conn: pika.BlockingConnection) -> None:
        # before a caller lets go of the connection: whatever its I/O read in and whatever
        # was queued meanwhile must not wait for the I/O thread, which did not see it. A
        # few rounds at most: other threads may keep queueing, and this caller has its
        # own work to return to; the I/O thread takes over the rest.
        for _ in range(3):
            self._drain_queued()
            if _has_events(conn):
                _dispatch(conn)
            if _output_pending(conn):
                _send_now(conn)
            if not self._tasks and not _has_events(conn):
                break
        else:
            self._wake_io()
        if _output_pending(conn):
            self._wake_io()  # the socket is full: the I/O thread writes the rest

    @property
    def pumping(self) -> bool:
        """True while a caller reads the connection itself (see :meth:`pump`)."""
        return self._pumping > 0

    def run_direct(self, fn: Callable[[], None], timeout: float = 1.0) -> bool:
        """Run ``fn`` on the calling thread while holding the connection, if possible.

        ``fn`` must not raise connection errors for work that can be retried (it records
        such work for republishing instead), and must not block.

        Args:
            fn: The work.
            timeout: Seconds to wait for the connection; 0 to take it only if it is free.

        Returns:
            False (without running ``fn``) when the connection is recovering, closed or
            busy for ``timeout`` seconds: the caller hands ``fn`` to the I/O thread then.
        """
        if self.in_io_thread:
            fn()
            return True
        if self._take(timeout) is None:
            return False
        try:
            try:
                self._direct(fn)
            except _CONNECTION_ERRORS:
                pass  # recorded by _direct; the I/O thread recovers
            return True
        finally:
            self._release()

    def run_and_pump(
        self, fn: Callable[[], None], fut: Future[Any], limit: float, timeout: float = 1.0
    ) -> bool:
        """:meth:`run_direct` then :meth:`pump` in one hold of the connection.

        A confirmed publish or an RPC call: send, then read the answer, on this thread.

        Returns:
            False (without running ``fn``) if the connection cannot be taken; see
            :meth:`run_direct`.
        """
        if self.in_io_thread:
            fn()
            return True
        conn = self._take(timeout)
        if conn is None:
            return False
        try:
            try:
                self._drain_queued()
                fn()
                _send_now(conn)
            except _CONNECTION_ERRORS as exc:
                self._mark_broken(exc)
                return True
            self._pump(conn, fut.done, time.monotonic() + limit)
            return True
        finally:
            self._release()

    def _take(self, timeout: float) -> pika.BlockingConnection | None:
        """Take the connection for a direct operation, or None (then not taken).

        ``timeout`` 0 takes it only if it is free this instant.
        """
        if not self._direct_ok():
            return None
        if timeout <= 0:
            if not self._own.acquire(blocking=False):
                return None
            self._took()
        elif not self._acquire(timeout, want=True):
            return None
        conn = self._pika
        if conn is None or not self._direct_ok():
            self._release()
            return None
        return conn

    def pump(self, fut: Future[Any], limit: float) -> None:
        """Do the connection's I/O on the calling thread until ``fut`` is done (best effort).

        Returns early, leaving the rest to the I/O thread, when another thread pumps
        already, another caller needs the connection, ``limit`` seconds passed or the
        connection is in trouble. Callers then wait for ``fut`` as usual.
        """
        self.pump_until(fut.done, limit)

    def pump_until(self, done: Callable[[], bool], limit: float, *, wait: float = 0.005) -> None:
        """:meth:`pump` until ``done()`` is true (checked after each round of I/O).

        ``wait``: how long to wait for the connection when another thread (not pumping)
        holds it; 0 to pump only if it is free.
        """
        if done() or self.in_io_thread or not self._direct_ok() or limit <= 0:
            return
        # another pumping caller reads our confirm or reply too: then just wait for it
        if not self._own.acquire(blocking=False) and (
            self._pumping or wait <= 0 or not self._own.acquire(timeout=wait)
        ):
            return
        self._took()
        try:
            conn = self._pika
            if conn is not None and self._direct_ok():
                self._pump(conn, done, time.monotonic() + limit)
        finally:
            self._release()

    def _pump(
        self, conn: pika.BlockingConnection, done: Callable[[], bool], deadline: float
    ) -> None:
        # holding _own; counted in _pumping so that threads wanting the connection poke us
        self._pumping += 1
        try:
            self._pump_counted(conn, done, deadline)
        finally:
            self._pumping -= 1

    def _pump_counted(
        self, conn: pika.BlockingConnection, done: Callable[[], bool], deadline: float
    ) -> None:
        alarm = self._alarm

        def stop() -> bool:
            return (
                done()
                or (alarm is not None and alarm.fired)
                or self._want > 0
                or bool(self._tasks)
                or _has_events(conn)
                or self._closing
            )

        try:
            while not done():
                if self._want or self._closing:
                    break
                if self._tasks:
                    self._drain_queued()
                    continue
                if _has_events(conn):
                    _dispatch(conn)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                alarm = self._alarm = _Alarm.by(conn, deadline, alarm)
                _io_until(conn, stop)
            self._leave(conn)
        except (*_CONNECTION_ERRORS, ValueError) as exc:  # ValueError: pika's closed timers
            self._mark_broken(exc)

    def send_pending(self) -> None:
        """Hand pika's pending output to the socket now (only while driving the connection).

        Also takes in what arrived meanwhile (confirms); connection errors are left for the
        next operation to meet.
        """
        conn = self._pika
        if conn is None or not self.in_io_thread:
            return
        try:
            _send_now(conn)
            if _output_pending(conn):
                _io_until(conn)  # the socket is full: wait for the broker to catch up
        except _CONNECTION_ERRORS as exc:
            self._mark_broken(exc)

    def _mark_broken(self, exc: BaseException) -> None:
        # a caller found the connection dead: the I/O thread recovers it
        if self._broken is None:
            self._broken = exc
        self._wake_io()

    def _wake_io(self) -> None:
        if self._wake_w is None:
            return
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # buffer full (a wake-up is pending anyway) or closed

    def wait_unblocked(self, timeout: float) -> None:
        """Wait while the broker blocks publishing (resource alarm).

        Raises:
            ConnectionBlocked: Still blocked after ``timeout`` seconds.
        """
        if self._unblocked.is_set():
            return
        if self.in_io_thread or not self._unblocked.wait(timeout):
            raise ConnectionBlocked(
                f"the broker has blocked publishing for over {timeout} s (memory or disk alarm); "
                "free resources on the broker or raise publish_blocked_timeout"
            )

    @property
    def blocked(self) -> bool:
        """True while the broker blocks publishing."""
        return not self._unblocked.is_set()

    @property
    def recovering(self) -> bool:
        """True from the loss of the connection until it is restored (or failed)."""
        return self._down_since is not None

    def downtime(self) -> float:
        """Seconds spent lost and recovering so far, in total (any thread)."""
        with self._lock:
            since = self._down_since
            total = self._downtime
        return total + (time.monotonic() - since if since is not None else 0.0)

    def wait_settled(self, fut: Future[R], timeout: float | None) -> R:
        """Wait for a future the I/O thread resolves, not counting time spent recovering.

        A publish is confirmed after the connection was restored and the message
        republished, or fails when recovery gives up; so only the time the connection was
        up counts against ``timeout``. While the broker blocks publishing, waiting longer
        than ``publish_blocked_timeout`` raises at once.

        Raises:
            concurrent.futures.TimeoutError: ``timeout`` seconds of connected time passed.
            ConnectionBlocked: The broker has blocked publishing for too long.
        """
        if timeout is None or self.in_io_thread:
            return fut.result(timeout)
        spent = 0.0
        last, last_down = time.monotonic(), self.downtime()
        while True:
            try:
                return fut.result(min(0.5, max(0.05, timeout - spent)))
            except FutureTimeout:
                pass
            now, down = time.monotonic(), self.downtime()
            spent += max(0.0, (now - last) - (down - last_down))
            last, last_down = now, down
            limit = self.settings.publish_blocked_timeout
            if self.blocked and now - self._blocked_at > limit:
                raise ConnectionBlocked(
                    f"the broker has blocked publishing for over {limit} s (memory or disk "
                    "alarm) and has not confirmed the message; it may still be delivered once "
                    "the alarm clears"
                )
            if self._closed.is_set() and not fut.done():
                raise self._failure or ClosedError("the connection was closed")
            if spent >= timeout and not self.recovering:
                raise FutureTimeout()

    def register(self, channel: Channel) -> None:
        """Track ``channel`` so it is restored after a reconnect."""
        with self._lock:
            self._channels.append(channel)

    def unregister(self, channel: Channel) -> None:
        """Stop tracking ``channel``."""
        with self._lock:
            if channel in self._channels:
                self._channels.remove(channel)

    def add_listener(self, listener: Callable[[str, BaseException | None], None]) -> None:
        """Call ``listener(event, error)`` on "lost", "restored", "failed" and "closed"."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str, BaseException | None], None]) -> None:
        """Stop calling ``listener`` (no error if it was not added)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def close(self, timeout: float | None) -> None:
        """Close channels and the connection, stop the I/O thread. Idempotent."""
        if self._thread is None:
            self._closing = True
            return
        if not self._closing:
            self._closing = True
            self.submit(lambda: None)  # wake the loop
            self._wake_io()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def pika_connection(self) -> pika.BlockingConnection:
        """The live pika connection (only while driving it: see :attr:`in_io_thread`)."""
        if self._pika is None:
            raise ConnectionLost("not connected")
        return self._pika

    def _drain_queued(self) -> None:
        """Run the tasks queued right now, not those queued meanwhile.

        Those are left to the I/O thread, woken for them: their submitters may have relied
        on a wake-up already pending (_wake_pending) and not poked.
        """
        if not self._tasks:
            return
        with self._lock:
            tasks = list(self._tasks)
            self._tasks.clear()
        self._run_tasks(tasks)
        with self._lock:
            if not self._tasks:
                self._wake_pending = False
                return
        self._wake_io()

    # ------------------------------------------------------------- I/O thread only
    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._tasks:
                    self._wake_pending = False
                    return
                tasks = list(self._tasks)
                self._tasks.clear()
            self._run_tasks(tasks)

    def _run_tasks(self, tasks: list[Callable[[], None]]) -> None:
        for i, task in enumerate(tasks):
            try:
                task()
            except (pex.AMQPConnectionError, pex.ConnectionWrongStateError):
                with self._lock:  # the rest runs after recovery (or fails at shutdown)
                    self._tasks.extendleft(reversed(tasks[i + 1 :]))
                raise
            except Exception:
                log.exception("hutch: unexpected error in an I/O task")

    def _connect_once(self, deadline: float | None = None) -> pika.BlockingConnection:
        s = self.settings
        errors: list[str] = []
        n = len(s.addresses)
        for i in range(n):
            idx = (self._address_index + i) % n
            address = s.addresses[idx]
            limit = None if deadline is None else deadline - time.monotonic()
            if limit is not None and limit <= 0:
                break
            params = self._parameters(address, limit)
            try:
                conn = pika.BlockingConnection(params)
            except (
                pex.ProbableAuthenticationError,
                pex.AuthenticationError,
                pex.ProbableAccessDeniedError,
            ) as exc:
                raise map_pika_error(exc) from exc
            except pex.ConnectionClosedByBroker as exc:
                if exc.reply_code in (403, 530):
                    raise map_pika_error(exc) from exc
                errors.append(f"{address}: {exc.reply_code} {exc.reply_text}")
                continue
            except (pex.AMQPError, OSError, AMQPConnectorException) as exc:
                # AMQPConnectorStackTimeout (the handshake ran out of time) is no AMQPError
                detail = _root_cause(exc)
                if "CERTIFICATE_VERIFY_FAILED" in detail:
                    detail += (
                        " (the broker's TLS certificate is not trusted: give the CA that "
                        "signed it as TlsOptions(ca_file=...), and connect by a name the "
                        "certificate holds or set server_hostname)"
                    )
                errors.append(f"{address}: {detail}")
                continue
            self._address_index = idx
            self.connected_address = address
            conn.add_on_connection_blocked_callback(self._on_blocked)
            conn.add_on_connection_unblocked_callback(self._on_unblocked)
            self._unblocked.set()
            log.info("hutch: connected to %s as %r", s.url_for(address), self.name)
            if s.tls is not None and s.tls.insecure_skip_verify:
                log.warning(
                    "hutch: INSECURE: TLS certificate and host name verification is disabled "
                    "(insecure_skip_verify=True) on %r; anyone on the path can impersonate the "
                    "broker and read the credentials",
                    self.name,
                )
            return conn
        # next time, start with the node after the one that failed first
        self._address_index = (self._address_index + 1) % n
        if deadline is not None and time.monotonic() >= deadline:
            raise OperationTimeout(
                f"connecting took longer than {self._open_timeout} s"
                + (": " + "; ".join(errors) if errors else "")
            )
        raise ConnectError(
            "cannot connect to the broker: " + "; ".join(errors),
            host=",".join(str(a) for a in s.addresses),
        )

    def _parameters(self, address: Address, limit: float | None) -> pika.ConnectionParameters:
        """The parameters for ``address``; ``limit``: seconds the attempt may take at most."""
        s = self.settings
        socket_timeout, stack_timeout = s.connect_timeout, s.connect_timeout * 2
        if limit is not None:
            socket_timeout = max(0.001, min(socket_timeout, limit))
            stack_timeout = max(0.001, min(stack_timeout, limit))
        ssl_options = None
        if s.tls is not None:
            ssl_options = pika.SSLOptions(
                s.tls.ssl_context(), server_hostname=s.tls.server_hostname or address.host
            )
        return pika.ConnectionParameters(
            host=address.host,
            port=address.port,
            virtual_host=s.vhost,
            credentials=pika.PlainCredentials(s.username, s.password.get_secret_value()),
            heartbeat=s.heartbeat,
            blocked_connection_timeout=s.blocked_connection_timeout,
            socket_timeout=socket_timeout,
            stack_timeout=stack_timeout,
            connection_attempts=1,
            ssl_options=ssl_options,
            client_properties={"connection_name": self.name, "product": "hutch"},
        )

    def _on_blocked(self, _conn: Any, _frame: Any) -> None:
        log.warning("hutch: broker blocked publishing on %r (resource alarm)", self.name)
        self._blocked_at = time.monotonic()
        self._unblocked.clear()

    def _on_unblocked(self, _conn: Any, _frame: Any) -> None:
        log.info("hutch: broker unblocked publishing on %r", self.name)
        self._unblocked.set()

    def _notify(self, event: str, error: BaseException | None) -> None:
        if self._owner != threading.get_ident():
            with self._owning():
                self._notify(event, error)
            return
        for listener in list(self._listeners):
            try:
                listener(event, error)
            except Exception:
                log.exception("hutch: connection listener failed")

    @contextmanager
    def _owning(self) -> Iterator[None]:
        self._acquire(None, want=False)
        try:
            yield
        finally:
            self._release()

    def _set_pika(self, conn: pika.BlockingConnection | None) -> None:
        # holding _own
        self._pika = conn
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if conn is not None and self._wake_r is not None:
            self._watch = _Watch(conn, self._wake_r.fileno())

    def _run(self) -> None:
        self._io_ident = threading.get_ident()
        try:
            try:
                with self._owning():
                    self._set_pika(self._connect_once(self._open_deadline))
            except HutchError as exc:
                self._failure = exc
                self._opened.set_exception(exc)
                return
            self._opened.set_result(None)
            io_due = True
            while not self._closing:
                try:
                    wait = self._serve(io_due)
                    if self._closing:
                        break
                    io_due = self._idle(wait)
                except _CONNECTION_ERRORS as exc:
                    if self._closing:
                        break
                    self._recover(exc)
                    io_due = True
        except BaseException as exc:  # pragma: no cover - last resort, keep callers from hanging
            log.exception("hutch: I/O thread crashed")
            self._fail(map_pika_error(exc) if not isinstance(exc, HutchError) else exc)
        finally:
            self._shutdown()

    def _serve(self, io_due: bool) -> float:
        """One round of the I/O thread's work; returns how long it may then sit idle."""
        conn = self._pika
        if (
            not io_due
            and conn is not None
            and self._broken is None
            and not self._tasks
            and not self._closing
            and not _has_events(conn)
            and not self._fd_ready()
        ):
            # woken for I/O that a caller driving the connection has done meanwhile: leave
            # the connection to callers (taking it now would only hold up their next step)
            try:
                return _idle_interval(conn)
            except (IndexError, AttributeError, TypeError):  # pika's timers changed meanwhile
                return 0.05
        with self._owning():
            try:
                return self._serve_owned(io_due)
            except _CONNECTION_ERRORS as exc:
                # callers must not take the dead connection before _recover does
                if self._broken is None:
                    self._broken = exc
                raise

    def _serve_owned(self, io_due: bool) -> float:
        conn = self._pika
        if self._broken is not None:
            raise self._broken
        if conn is None:
            raise pex.ConnectionWrongStateError("not connected")
        self._drain()
        if self._closing:
            return 0.0
        if io_due or _has_events(conn) or self._fd_ready() or _output_pending(conn):
            _coalesce(conn)
            conn.process_data_events(0)
            self._drain()
        if self._tasks or self._broken is not None or _has_events(conn):
            return 0.0
        if self._watch is not None:
            self._watch.want_output(_output_pending(conn))
        return _idle_interval(conn)

    def _fd_ready(self) -> bool:
        watch = self._watch
        return watch is None or watch.wait(0)[0]

    def _idle(self, wait: float) -> bool:
        """Wait without holding the connection until pika has I/O to do or ``wait`` passed.

        Returns:
            True if pika must run whatever the descriptor says now (timers are due).
        """
        if wait <= 0 or self._tasks:
            return True
        watch = self._watch
        wake = self._wake_r
        if watch is None or wake is None:
            return True
        try:
            io, woken = watch.wait(wait)
        except (OSError, ValueError):
            return True  # a descriptor went away with the connection: let pika tell why
        if woken:
            try:
                while wake.recv(4096):
                    pass
            except OSError:
                pass
        if not io and not woken:
            return True  # pika's timers are due
        if io and self._own.locked():
            # a caller drives the connection and reads what came in (I/O slipped in before
            # it muted the socket): rather than queue up for the connection, and hold up
            # the caller's next step, wait until the caller lets it go
            self._parked = True
            try:
                if self._own.locked():
                    select.select([wake], [], [], wait)
            finally:
                self._parked = False
        # _serve checks again whether I/O is still to be done once it holds the connection
        return False

    def _recover(self, exc: BaseException) -> None:
        error = map_pika_error(exc)
        log.warning("hutch: connection %r lost: %s", self.name, _root_cause(exc))
        with self._owning():
            self._broken = None
            self._set_pika(None)
            with self._lock:
                self._down_since = time.monotonic()
            with self._lock:
                channels = list(self._channels)
            for ch in channels:
                ch.on_connection_lost()
        self._notify("lost", error)
        policy: RecoveryPolicy = self.settings.recovery
        if isinstance(error, AuthenticationError) or not policy.enabled:
            self._fail(error)
            return
        started = time.monotonic()
        attempt = 0
        for delay in policy.delays():
            attempt += 1
            self._wake.clear()
            if self._closing or self._wake_wait_closing(delay):
                return
            with self._owning():
                try:
                    conn = self._connect_once()
                except AuthenticationError as auth:
                    self._fail(auth)
                    return
                except ConnectError as again:
                    log.info(
                        "hutch: reconnect attempt %d of %r failed: %s", attempt, self.name, again
                    )
                    continue
                self._set_pika(conn)
                try:
                    with self._lock:
                        channels = list(self._channels)
                    for ch in channels:
                        ch.restore()
                except _CONNECTION_ERRORS as lost:
                    log.info("hutch: connection %r lost again while restoring: %s", self.name, lost)
                    self._set_pika(None)
                    for ch in channels:
                        ch.on_connection_lost()
                    continue
                self._broken = None
                self.recoveries += 1
                with self._lock:
                    if self._down_since is not None:
                        self._downtime += time.monotonic() - self._down_since
                    self._down_since = None
            log.warning(
                "hutch: connection %r restored to %s after %.2f s (%d attempts)",
                self.name,
                self.connected_address,
                time.monotonic() - started,
                attempt,
            )
            with self._lock:
                self._wake_pending = False
            self._notify("restored", None)
            return
        self._fail(
            ConnectionLost(
                f"connection {self.name!r} lost and not recovered after {attempt} attempts: {error}"
            )
        )

    def _wake_wait_closing(self, delay: float) -> bool:
        deadline = time.monotonic() + delay
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing:
                return self._closing
            self._wake.wait(remaining)
            self._wake.clear()

    def _fail(self, error: HutchError) -> None:
        with self._lock:
            self._down_since = None
        if self._failure is None:
            self._failure = error
            log.error("hutch: connection %r failed: %s", self.name, error)
            self._notify("failed", error)
        self._closing = True

    def _shutdown(self) -> None:
        with self._owning():
            self._shutdown_owned()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def _shutdown_owned(self) -> None:
        self._closing = True
        with self._lock:
            channels = list(self._channels)
        reason = self._failure or ClosedError("the connection was closed")
        conn = self._pika
        self._set_pika(None)
        for ch in channels:
            try:
                ch.on_connection_closed(reason, graceful=conn is not None and self._failure is None)
            except (pex.AMQPError, OSError, HutchError):
                pass
        if conn is not None:
            try:
                if conn.is_open:
                    conn.close()
            except (pex.AMQPError, OSError) as exc:
                log.debug("hutch: error while closing %r: %s", self.name, exc)
        # run what is still queued: each task sees the closed state and fails its future
        with self._lock:
            tasks = list(self._tasks)
            self._tasks.clear()
        for task in tasks:
            try:
                task()
            except Exception:
                log.debug("hutch: task failed during shutdown", exc_info=True)
        if not self._opened.done():
            self._opened.set_exception(reason)
        self._unblocked.set()
        if self._failure is None:
            # closed by close(), from any thread or a handler (a failure was told as
            # "failed"): whoever serves on it stops instead of waiting for ever
            self._notify("closed", reason)
        self._closed.set()
        log.info("hutch: connection %r closed", self.name)


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while True:
        # pika wraps socket errors: AMQPConnectionError(AMQPConnectorSocketConnectError(
        # exception=ConnectionRefusedError(...)))
        nxt = seen.__cause__ or getattr(seen, "exception", None)
        if nxt is None and seen.args and isinstance(seen.args[0], BaseException):
            nxt = seen.args[0]
        if not isinstance(nxt, BaseException) or nxt is seen:
            break
        seen = nxt
    text = str(seen) or type(seen).__name__
    return f"{type(seen).__name__}: {text}" if text != type(seen).__name__ else text


class Connection(Resource):
    """A connection to RabbitMQ, owned by one background I/O thread.

    Constructing it validates the settings and does no I/O; :meth:`open` (or ``with``)
    connects. Any thread may use a connection and the publishers, subscribers and pools
    built on it: they hand their work to the I/O thread, which keeps heartbeats flowing
    however long user code runs. The connection recovers by itself after it is lost (see
    :class:`~hutch.RecoveryPolicy`).

    Args:
        url: ``amqp://user:pass@host:port/vhost`` (``amqps://`` for TLS), or a list of URLs of
            cluster nodes to fail over between. Defaults to the ``HUTCH_URL`` environment
            variable, else ``amqp://guest:guest@localhost:5672/``.
        settings: Ready-made settings instead of a URL (the environment is not read).
        **options: Any :class:`~hutch.ConnectionSettings` field, overriding the URL's
            (``heartbeat``, ``connection_name``, ``tls``, ``recovery``...). Fields neither
            given nor in the URL come from ``HUTCH_<FIELD>`` variables (``HUTCH_HEARTBEAT``,
            ``HUTCH_VHOST``...; see :meth:`~hutch.ConnectionSettings.from_environment`).

    Raises:
        ValueError: A malformed URL or an invalid option.
        TypeError: Both ``url`` and ``settings`` given.

    Example:
        >>> with hutch.Connection("amqp://guest:guest@localhost/") as conn:  # doctest: +SKIP
        ...     hutch.Publisher(conn, exchange="logs").publish("hello")
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        settings: ConnectionSettings | None = None,
        **options: Any,
    ) -> None:
        if settings is not None:
            if url is not None or options:
                raise TypeError("pass either settings or a URL with options, not both")
            self.settings = settings
        else:
            self.settings = ConnectionSettings.from_environment(url, **options)
        self.name = self.settings.connection_name or f"hutch-{next(_names)}"
        self._io = IoLoop(self.settings, self.name)

    def __repr__(self) -> str:
        state = "open" if self.is_open else ("failed" if self._io.failure else "closed")
        address = self._io.connected_address or self.settings.addresses[0]
        return f"<Connection {self.name!r} {self.settings.url_for(address)} {state}>"

    @property
    def is_open(self) -> bool:
        """True once opened and until closed or failed for good."""
        return self._io.is_open

    @property
    def blocked(self) -> bool:
        """True while the broker blocks publishing (memory or disk alarm)."""
        return self._io.blocked

    @property
    def recoveries(self) -> int:
        """How many times this connection has been recovered after a loss."""
        return self._io.recoveries

    def open(self, timeout: float | None = 30.0) -> Self:
        """Connect (trying each address in turn) and start the I/O thread.

        Args:
            timeout: Seconds to wait for the connection.

        Returns:
            This connection, for chaining.

        Raises:
            AuthenticationError: The broker refused the credentials.
            ConnectError: No address could be reached.
            ClosedError: The connection was closed before.
            ValueError: ``timeout`` is not a finite number of seconds greater than 0.
        """
        timeout = check_timeout("timeout", timeout, allow_none=True)
        if self._io._closing:
            raise ClosedError("the connection is closed; create a new one")
        self._io.start(timeout)
        return self

    def close(self, timeout: float | None = 10.0) -> None:
        """Close the connection and everything on it. Idempotent.

        Args:
            timeout: Seconds to wait for the I/O thread to finish.
        """
        self._io.close(check_timeout("timeout", timeout, allow_none=True))

    def add_listener(self, listener: Callable[[str, BaseException | None], None]) -> None:
        """Be told when the connection is "lost", "restored", has "failed" or is "closed".

        ``"closed"`` (with a :class:`~hutch.ClosedError`) comes when :meth:`close` ended
        the connection, from any thread; a connection that failed for good is told
        ``"failed"`` instead. Either is the last event. The listener runs on the I/O thread
        and must return quickly; remove it with :meth:`remove_listener`.

        Args:
            listener: Called as ``listener(event, error)``.
        """
        self._io.add_listener(listener)

    def remove_listener(self, listener: Callable[[str, BaseException | None], None]) -> None:
        """Stop telling ``listener`` about events (no error if it was not added).

        Args:
            listener: A listener given to :meth:`add_listener`.
        """
        self._io.remove_listener(listener)

    def channel(self, *, confirms: bool = False) -> Channel:
        """Open a low-level channel (used by publishers, subscribers and pools).

        Args:
            confirms: Put the channel in publisher-confirm mode.

        Returns:
            The channel.
        """
        from hutch._channel import Channel

        ch = Channel(self._io, confirms=confirms)
        ch.open()
        return ch

    @property
    def io(self) -> IoLoop:
        """The I/O loop (internal)."""
        return self._io


def connect(url: str | Sequence[str] | None = None, **options: Any) -> Connection:
    """Open a connection: ``Connection(url, **options).open()``.

    Settings come from, in this order: ``options``, the URL, ``HUTCH_*`` environment
    variables, the defaults (see :meth:`~hutch.ConnectionSettings.from_environment`).

    Args:
        url: An ``amqp://`` or ``amqps://`` URL, or several for a cluster; by default the
            ``HUTCH_URL`` environment variable, else ``amqp://guest:guest@localhost:5672/``.
        **options: Settings overriding the URL's (see :class:`~hutch.ConnectionSettings`).

    Returns:
        The open connection; close it, or use it in a ``with`` block.

    Raises:
        AuthenticationError: The broker refused the credentials.
        ConnectError: No address could be reached.

    Example:
        >>> with hutch.connect("amqp://guest:guest@localhost/") as conn:  # doctest: +SKIP
        ...     ...
    """
    timeout = check_timeout("open_timeout", options.pop("open_timeout", 30.0), allow_none=True)
    return Connection(url, **options).open(timeout)


def resolve_connection(connection: Connection | str | None) -> tuple[Connection, bool]:
    """Accept a connection or a URL; return the connection and whether we own it.

    Args:
        connection: A :class:`Connection` (shared, not closed by the caller's close), a URL,
            or None for ``HUTCH_URL`` (see :meth:`~hutch.ConnectionSettings.from_environment`).

    Returns:
        The connection and True if it was created here (then it is opened lazily by the owner).

    Raises:
        TypeError: Neither a Connection nor a URL string.
    """
    if isinstance(connection, Connection):
        return connection, False
    if connection is None or isinstance(connection, str):
        return Connection(connection), True
    raise TypeError(
        f"expected a hutch.Connection or an amqp:// URL, got {type(connection).__name__}"
    )
