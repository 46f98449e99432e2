"""Who drives the connection: the state every thread reads, and how it is taken.

pika's ``BlockingConnection`` is not thread-safe: whoever drives it holds ``_own``. That
is the I/O thread when nobody else needs the connection, or a caller that does its own
I/O (a confirmed publish, an RPC call). The rules, also in docs/architecture.md
("The ownership protocol"); the decisions themselves are pure functions in
:mod:`hutch._amqp.ownership_rules`, tested without a broker.

Fields every thread may read::

    field           written by (holding)                         read without a lock by
    _own            whoever drives pika acquires it              _idle (locked())
    _owner          the holder, after acquiring / before release in_io_thread (own ident)
    _pumping        the holder, in _pump (0 or 1)                _acquire(want), pump_until
    _want           waiters, under _lock, around _own.acquire    the pumping holder
    _broken         a holder meeting the dead connection;        _direct_ok
                    cleared only by _recover (holding _own)
    _parked         the I/O thread, in _idle                     _release
    _closing        close(), _fail, _shutdown_owned (monotonic)  everyone
    _down_since     _recover (under _lock and _own); cleared on  _direct_ok, recovering
                    success or _fail
    _wake_pending   under _lock: submit sets; _drain clears when (only under _lock)
                    the queue is empty; _recover clears
    _tasks          append/clear under _lock                     pump/serve/idle (a hint)
    _pika           _set_pika, holding _own                      _direct_ok, submit
    _opened, _failure, _closed, _unblocked: the I/O thread       is_open, check_usable

Connection states (``ownership_rules.state_of``; derived, never stored; first match wins)::

    FAILED      _failure set            check_usable raises it
    CLOSED      _closed set             ClosedError; the thread has ended
    CLOSING     _closing                the I/O thread fails futures, runs queued tasks
    NEW         no thread               "call open()"
    CONNECTING  _opened not done        the I/O thread connects, holding _own
    RECOVERING  _down_since set         submitted work waits; backoff without _own,
                                        each attempt and restore() with it
    BROKEN      _broken, or no/closed   nobody drives until the I/O thread's _serve
                pika connection         meets it and starts recovering
    OPEN        otherwise               a caller may take it if unblocked (_direct_ok)

Ownership while OPEN::

    sub-state        _own    _owner  _pumping  watch    left by
    IDLE_UNOWNED     free    None    0         on       any take
    IO_THREAD_SERVES held    I/O     0         on       end of _serve_owned
    CALLER_DIRECT    held    caller  0         muted    _leave (drain, dispatch, send) -> _release
    CALLER_PUMPS     held    caller  1         muted    future done, alarm fired, _want > 0,
                                                        tasks queued, events ready, _closing
    IO_PARKED        held by a caller; the I/O thread sleeps on the wake socket until
                     _release sees _parked and rings it
    WAITING (k)      _acquire(want=True): _want += k; the pumping holder is poked

Invariants:

1. One driver: pika objects (the connection, every channel, every callback) are touched
   only by the thread whose ident is ``_owner``, which holds ``_own``; ``in_io_thread`` is
   true exactly for it (an unlocked read of ``_owner`` compared with one's own ident cannot
   give a false positive).
2. ``_pumping > 0`` implies a caller, not the I/O thread, holds ``_own``; pumps never nest.
3. The watch is muted exactly while a caller (not the I/O thread) holds ``_own``.
4. ``_parked`` implies the I/O thread is in ``_idle`` without ``_own``; every ``_release``
   while parked rings the wake socket, so no I/O is left unread.
5. A caller takes the connection only if ``_direct_ok`` (OPEN, not blocked), checked again
   once ``_own`` is held.
6. ``_broken`` set: no caller takes the connection; only ``_recover`` (holding ``_own``)
   clears it.
7. Tasks run in submission order on whichever thread holds ``_own``; a task queued while
   no wake-up was pending triggers exactly one (poke pika's poller, or the wake socket
   when there is no pika connection).
8. ``_want > 0`` makes the pumping holder leave within one round.
9. ``_closing`` never goes back; ``_failure`` is set at most once; ``_closed`` is set last,
   after every channel failed its pending futures and every queued task ran.
10. Listeners run holding ``_own`` (``_notify`` takes it), so they may drive pika.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Protocol

import pika
import pika.channel
import pika.exceptions as pex
import pika.spec

from hutch._amqp.ownership_rules import View, Wake, lifecycle_of, state_of, submit_wake
from hutch._amqp.pika_private import (
    Alarm,
    poke,
)
from hutch._amqp.watch import Watch
from hutch._exceptions import (
    ClosedError,
    ConnectionLost,
    HutchError,
)
from hutch._lifecycle import Lifecycle
from hutch._settings import Address, ConnectionSettings

__all__ = ["Ownership", "Restorable"]

log = logging.getLogger("hutch")


class Restorable(Protocol):
    """What the driver needs of a channel: told of losses, restored, closed (driving it)."""

    def on_connection_lost(self) -> None: ...

    def restore(self) -> None: ...

    def on_connection_closed(self, reason: BaseException, *, graceful: bool) -> None: ...


class Ownership:
    """The connection's shared state and the lock that says who drives pika.

    See the module docstring for the state table.
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
        self._opened_ok = False  # _opened resolved with success: a plain read for _direct_ok
        self._closing = False
        self._closed = threading.Event()
        self._failure: HutchError | None = None
        self._channels: list[Restorable] = []
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
        self._alarm: Alarm | None = None  # ends pumped waits; only the owner touches it
        self._broken: BaseException | None = None
        self._parked = False
        self._watch: Watch | None = None
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
        conn = self._pika
        # the I/O thread at work looks at the queue again before it idles (_serve, _idle):
        # waking it would only cost a system call
        io_owns = self._thread is not None and self._owner == self._io_ident
        wake = submit_wake(False, io_owns, conn is not None)
        if wake is Wake.POKE and conn is not None:
            try:
                poke(conn)  # wakes the idle I/O thread, or makes a pumping caller drain
            except (AttributeError, OSError):
                self._wake_io()
        elif wake is Wake.SOCKET:
            self._wake_io()  # the loop drains queued tasks after recovery or fails them

    def view(self) -> View:
        """A snapshot of the fields the connection's state is derived from (any thread).

        Not atomic (read without the lock): for :func:`~hutch._amqp.ownership_rules.state_of`
        in logs and tests; the driver's own decisions read the fields themselves.
        """
        conn = self._pika
        return View(
            started=self._thread is not None,
            opened=self._opened.done(),
            has_connection=conn is not None,
            connection_closed=conn is not None and conn.is_closed,
            broken=self._broken is not None,
            recovering=self._down_since is not None,
            closing=self._closing,
            closed=self._closed.is_set(),
            failed=self._failure is not None,
            unblocked=self._unblocked.is_set(),
        )

    @property
    def lifecycle(self) -> Lifecycle:
        """The connection's state on the lifecycle every resource shares (any thread).

        Derived from :meth:`view` like :func:`~hutch._amqp.ownership_rules.state_of`; the
        driver keeps its own fields because the hot path reads them without a lock.
        """
        return lifecycle_of(state_of(self.view()))

    def _direct_ok(self) -> bool:
        # ownership_rules.may_take_direct(self.view()), inline: it runs on every direct
        # call; tests/unit/test_ownership_rules.py checks that the two agree
        conn = self._pika
        return (
            conn is not None
            and self._broken is None
            and self._down_since is None
            and not self._closing
            and self._opened_ok
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
                    poke(conn)
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

    @contextmanager
    def _owning(self) -> Iterator[None]:
        self._acquire(None, want=False)
        try:
            yield
        finally:
            self._release()

    @property
    def pumping(self) -> bool:
        """True while a caller reads the connection itself (see :meth:`pump`)."""
        return self._pumping > 0

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

    def register(self, channel: Restorable) -> None:
        """Track ``channel`` so it is restored after a reconnect."""
        with self._lock:
            self._channels.append(channel)

    def unregister(self, channel: Restorable) -> None:
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
