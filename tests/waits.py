"""Waiting in integration tests without idle time on the memory broker.

A test that checks that nothing *more* arrives must wait a quiet window first. On RabbitMQ
these helpers wait exactly as long as before (the window is slept); on the memory broker
:func:`hutch.testing.settle` knows at once when nothing more can arrive, so the same test
runs in milliseconds there. RabbitMQ stays the truth: the window is what makes the test
mean something on a real broker, and it is not shortened there.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from hutch import Clock, Connection, Message, Subscriber
from hutch._clock import REAL_CLOCK
from hutch.testing import settle

T = TypeVar("T")

__all__ = ["drain", "drain_messages", "result_on", "settle", "wait_for"]


def drain_messages(conn: Connection, sub: Subscriber[T], quiet: float = 0.5) -> list[Message[T]]:
    """Every message ``sub`` receives until none arrives for ``quiet`` seconds (each acked).

    On RabbitMQ: ``list(sub.messages(timeout=quiet))``. On the memory broker: take what has
    arrived, settle (every delivery the acks make possible reaches ``sub``), again until a
    settled broker has nothing more for it.
    """
    if conn.settings.memory is None:
        return list(sub.messages(timeout=quiet))
    out: list[Message[T]] = []
    while True:
        settle(conn, quiet)
        got = list(sub.messages(timeout=0.001))
        if not got:
            return out
        out.extend(got)


def drain(conn: Connection, sub: Subscriber[Any], quiet: float = 0.5) -> list[Any]:
    """The bodies of :func:`drain_messages`."""
    return [m.body for m in drain_messages(conn, sub, quiet)]


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, *, clock: Clock = REAL_CLOCK
) -> None:
    """Poll ``predicate`` every 20 ms; fail the test naming ``what`` after ``timeout`` s.

    On ``clock``: a test that waits for what its own connection's threads do passes
    ``conn.clock``, so that on the memory broker's virtual time the polls let time jump (a
    retry's backoff, a handler that sleeps on the clock). Waits for another process keep
    the real clock: virtual time does not see what a process does.
    """
    deadline = clock.now() + timeout
    while not predicate():
        if clock.now() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        clock.sleep(0.02)


def result_on(clock: Clock, future: concurrent.futures.Future[T], timeout: float) -> T:
    """``future.result(timeout)``, waiting on ``clock`` (a call_async that should time out)."""
    clock.wait_future(future, clock.now() + timeout)
    return future.result(0)
