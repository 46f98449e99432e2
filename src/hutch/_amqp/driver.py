"""The driver: what callers use to drive pika's connection, on top of its four layers.

``Driver`` = :class:`~hutch._amqp.io_thread.IoThread` (the I/O thread) on
:class:`~hutch._amqp.recovery.Recovering` (connect, recover, shut down) on
:class:`~hutch._amqp.ownership.Ownership` (the shared state and who drives pika; its
module docstring has the state table and the invariants). Each layer calls only
downwards. Here: taking the connection to call into pika (``call``, ``run_direct``,
``run_and_pump``) and pumping it while waiting for the broker (``pump``, ``pump_until``,
``wait_settled``).

Threading model
---------------
pika's ``BlockingConnection`` is not thread-safe and only answers heartbeats while it is
being called into. hutch guards every :class:`Connection` with a lock that whoever calls
into pika must hold (see :attr:`Driver.in_io_thread`), and gives it one I/O thread that
does the connection's I/O whenever nobody else does, so heartbeats keep flowing no matter
what user code does. The idle I/O thread waits for the socket *without* the lock, so a
thread that needs the broker now (a confirmed publish, a blocking RPC call) takes the
connection and does its own I/O (:meth:`Driver.run_and_pump`) instead of handing work over
and waiting to be woken. Work nobody waits for is handed to :meth:`Driver.submit`, and
runs in submission order. Handlers never run inside pika's callbacks.

When the connection is lost the I/O thread reconnects with backoff (see
:class:`~hutch.RecoveryPolicy`), and every channel re-declares its topology, restores its
QoS and consumers and republishes what was not yet confirmed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import pika
import pika.channel
import pika.spec

from hutch._amqp.errors import CONNECTION_ERRORS
from hutch._amqp.io_thread import IoThread
from hutch._amqp.pika_private import (
    Alarm,
    dispatch_events,
    has_events,
    io_until,
    output_pending,
    send_now,
)
from hutch._exceptions import (
    ClosedError,
    ConnectionBlocked,
    HutchError,
    OperationTimeout,
)

__all__ = ["Driver"]

log = logging.getLogger("hutch")

R = TypeVar("R")


class Driver(IoThread):
    """Owns the pika connection on a dedicated thread and runs closures submitted to it.

    Internal: used by :class:`Connection` and the channel layer.
    """

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
            except CONNECTION_ERRORS:
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

    def _direct(self, fn: Callable[[], R]) -> R:
        # holding _own: run what was queued before (order), then fn, then send its output
        conn = self._pika
        assert conn is not None
        try:
            self._drain_queued()
            result = fn()
        except CONNECTION_ERRORS as exc:
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
        except CONNECTION_ERRORS as exc:
            self._mark_broken(exc)

    def _leave(self, conn: pika.BlockingConnection) -> None:
        # before a caller lets go of the connection: whatever its I/O read in and whatever
        # was queued meanwhile must not wait for the I/O thread, which did not see it. A
        # few rounds at most: other threads may keep queueing, and this caller has its
        # own work to return to; the I/O thread takes over the rest.
        for _ in range(3):
            self._drain_queued()
            if has_events(conn):
                dispatch_events(conn)
            if output_pending(conn):
                send_now(conn)
            if not self._tasks and not has_events(conn):
                break
        else:
            self._wake_io()
        if output_pending(conn):
            self._wake_io()  # the socket is full: the I/O thread writes the rest

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
            except CONNECTION_ERRORS:
                pass  # recorded by _direct; the I/O thread recovers
            return True
        finally:
            self._release()

    def run_and_pump(
        self, fn: Callable[[], None], done: Callable[[], bool], limit: float, timeout: float = 1.0
    ) -> bool:
        """:meth:`run_direct` then :meth:`pump_until` ``done()`` in one hold of the connection.

        A confirmed publish or an RPC call: send, then read the answer, on this thread; an
        RPC server's reply: send it, then read the next request.

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
                send_now(conn)
            except CONNECTION_ERRORS as exc:
                self._mark_broken(exc)
                return True
            self._pump(conn, done, time.monotonic() + limit)
            return True
        finally:
            self._release()

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
                or has_events(conn)
                or self._closing
            )

        try:
            while not done():
                if self._want or self._closing:
                    break
                if self._tasks:
                    self._drain_queued()
                    continue
                if has_events(conn):
                    dispatch_events(conn)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                alarm = self._alarm = Alarm.by(conn, deadline, alarm)
                io_until(conn, stop)
            self._leave(conn)
        except (*CONNECTION_ERRORS, ValueError) as exc:  # ValueError: pika's closed timers
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
            send_now(conn)
            if output_pending(conn):
                io_until(conn)  # the socket is full: wait for the broker to catch up
        except CONNECTION_ERRORS as exc:
            self._mark_broken(exc)

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
