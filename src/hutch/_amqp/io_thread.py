"""The I/O thread: serves the connection when nobody else does, idles without it."""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout

import pika.exceptions as pex

from hutch._amqp.errors import CONNECTION_ERRORS, map_pika_error
from hutch._amqp.pika_private import (
    coalesce,
    has_events,
    idle_interval,
    output_pending,
)
from hutch._amqp.recovery import Recovering
from hutch._clock import VIRTUAL_CLOCK
from hutch._exceptions import (
    HutchError,
    OperationTimeout,
)

__all__ = ["IoThread"]

log = logging.getLogger("hutch")


#: Longest wait of a failed open() for its I/O thread to end (its attempt ends by the
#: open's deadline, so this is only slack for pika to unwind).
_OPEN_GRACE = 2.0


class IoThread(Recovering):
    """Starts, runs and stops the I/O thread."""

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
            VIRTUAL_CLOCK.ignore(self._thread)  # serves RabbitMQ, never a memory broker
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
            self._opened_ok = True
            io_due = True
            while not self._closing:
                try:
                    wait = self._serve(io_due)
                    if self._closing:
                        break
                    io_due = self._idle(wait)
                except CONNECTION_ERRORS as exc:
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
            and not has_events(conn)
            and not self._fd_ready()
        ):
            # woken for I/O that a caller driving the connection has done meanwhile: leave
            # the connection to callers (taking it now would only hold up their next step)
            try:
                return idle_interval(conn)
            except (IndexError, AttributeError, TypeError):  # pika's timers changed meanwhile
                return 0.05
        with self._owning():
            try:
                return self._serve_owned(io_due)
            except CONNECTION_ERRORS as exc:
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
        if io_due or has_events(conn) or self._fd_ready() or output_pending(conn):
            coalesce(conn)
            conn.process_data_events(0)
            self._drain()
        if self._tasks or self._broken is not None or has_events(conn):
            return 0.0
        if self._watch is not None:
            self._watch.want_output(output_pending(conn))
        return idle_interval(conn)

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
