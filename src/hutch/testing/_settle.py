"""Waiting for "nothing more will arrive" without sleeping on the memory broker."""

from __future__ import annotations

import time

from hutch._checks import check_float
from hutch._connection import Connection
from hutch._exceptions import OperationTimeout

__all__ = ["settle"]


def settle(conn: Connection, quiet: float = 0.5, *, handled: bool = False) -> None:
    """Let ``quiet`` seconds pass for the broker: what can happen in them has happened.

    A test that checks that something did *not* happen ("the error queue got nothing",
    "no third delivery"), or that waits out a TTL, a delay or a retry's backoff, has to
    give the broker time first. On RabbitMQ that is a sleep of ``quiet`` seconds. On the
    memory broker (``memory://``) it takes as long as the broker still has work: every
    delivery made has reached its consumer, and a message or queue expiry due within
    ``quiet`` seconds is not slept for but brought forward (the broker's time moves on to
    it), so it happens at once, with what it causes. A retry with a 30 s backoff is
    handled in milliseconds. Use it after the test's own producers are done; a producer
    thread that has yet to publish is not waited for. Client-side timeouts (an
    ``RpcClient``'s, ``messages(timeout=...)``) keep real time, unless the broker runs
    on virtual time (``memory://NAME?clock=virtual``, the pytest plugin's default).

    Args:
        conn: The connection the test uses (its broker is the one waited for).
        quiet: The window, in seconds, in which nothing may arrive.
        handled: Also wait until every delivered message has been acked, nacked or
            rejected (a WorkerPool's or Subscriber's handlers have finished with them).
            Leave it False while messages wait in a ``Subscriber.messages()`` loop that
            the test itself has not reached.

    Raises:
        TypeError: ``quiet`` is not a number.
        ValueError: ``quiet`` is not a finite number of seconds >= 0.
        OperationTimeout: The memory broker did not become quiet within 30 seconds plus
            ``quiet`` (a handler that never finishes, with ``handled=True``).

    Example:
        >>> pub.publish(order, routing_key="eu")  # doctest: +SKIP
        >>> settle(conn)  # doctest: +SKIP
        >>> assert list(us_orders.messages(timeout=0.01)) == []  # doctest: +SKIP
    """
    quiet = check_float("settle(quiet=...)", quiet, low=0)
    name = conn.settings.memory
    if name is None:
        time.sleep(quiet)
        return
    from hutch._memory import get_broker

    broker = get_broker(name)
    if not broker.wait_quiet(quiet, handled=handled, timeout=30.0 + quiet):
        raise OperationTimeout(
            f"the memory broker {name!r} did not become quiet in {30.0 + quiet:.0f} s: "
            "a handler still holds a message (handled=True) or callbacks keep coming"
        )
