"""The driver's decisions as pure functions: testable without a broker or a thread.

Each function states one rule of the ownership protocol (see the state table in
:mod:`hutch._amqp.ownership` and docs/architecture.md). The driver passes in what it
read from its fields; nothing here reads a field, takes a lock or touches pika.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hutch._lifecycle import Lifecycle

__all__ = [
    "ConnState",
    "PumpStep",
    "View",
    "Wake",
    "lifecycle_of",
    "may_take_direct",
    "pump_step",
    "pump_stop",
    "reachable",
    "serve_may_skip",
    "state_of",
    "submit_wake",
]


class ConnState(enum.Enum):
    """The connection's state as every thread may see it (derived, never stored)."""

    NEW = "new"  # constructed, open() not called: no I/O thread
    CONNECTING = "connecting"  # I/O thread started, first connection not open yet
    OPEN = "open"  # connected; callers may take the connection (unless blocked)
    BROKEN = "broken"  # a thread met the dead connection; recovery not begun yet
    RECOVERING = "recovering"  # lost: reconnecting with backoff, then restoring channels
    CLOSING = "closing"  # close() called (or failed): the I/O thread shuts down
    CLOSED = "closed"  # shut down; every pending future failed
    FAILED = "failed"  # ended for good by an error (auth refused, recovery gave up)


@dataclass(frozen=True)
class View:
    """A snapshot of the driver's fields (see ``Ownership.view()``)."""

    started: bool  # _thread is not None
    opened: bool  # _opened.done()
    has_connection: bool  # _pika is not None
    connection_closed: bool  # _pika.is_closed
    broken: bool  # _broken is not None
    recovering: bool  # _down_since is not None
    closing: bool  # _closing
    closed: bool  # _closed.is_set()
    failed: bool  # _failure is not None
    unblocked: bool  # _unblocked.is_set()


def reachable(v: View) -> bool:
    """The invariants that tie the fields together (INV-1..INV-5 of the state table)."""
    return (
        (not v.closed or v.closing)  # INV-1: _closed is set only after _closing
        and (not v.failed or v.closing or not v.has_connection)  # INV-2: failure ends it
        and (v.started or not (v.opened or v.has_connection or v.broken or v.recovering))
        and (not v.recovering or v.opened)  # INV-4: only an opened connection recovers
        and (not v.has_connection or v.opened or not v.recovering)  # INV-5
    )


def state_of(v: View) -> ConnState:
    """The one state a snapshot is in (most final first)."""
    if v.failed:
        return ConnState.FAILED
    if v.closed:
        return ConnState.CLOSED
    if v.closing:
        return ConnState.CLOSING
    if not v.started:
        return ConnState.NEW
    if not v.opened:
        return ConnState.CONNECTING
    if v.recovering:
        return ConnState.RECOVERING
    if v.broken or not v.has_connection or v.connection_closed:
        return ConnState.BROKEN
    return ConnState.OPEN


# the connection's finer states on the one lifecycle every resource shares
_LIFECYCLE = {
    ConnState.NEW: Lifecycle.NEW,
    ConnState.CONNECTING: Lifecycle.OPENING,
    ConnState.OPEN: Lifecycle.OPEN,
    ConnState.BROKEN: Lifecycle.OPEN,  # still usable: recovery takes over
    ConnState.RECOVERING: Lifecycle.OPEN,
    ConnState.CLOSING: Lifecycle.CLOSING,
    ConnState.CLOSED: Lifecycle.CLOSED,
    ConnState.FAILED: Lifecycle.FAILED,
}


def lifecycle_of(state: ConnState) -> Lifecycle:
    """The connection's state as a :class:`~hutch._lifecycle.Lifecycle`.

    BROKEN and RECOVERING count as OPEN: the connection is still in use while it recovers.
    """
    return _LIFECYCLE[state]


def may_take_direct(v: View) -> bool:
    """May a caller take the connection for its own I/O now? (``_direct_ok``).

    Only when OPEN and the broker does not block publishing; checked again once taken.
    """
    return (
        v.has_connection
        and not v.broken
        and not v.recovering
        and not v.closing
        and v.opened
        and v.unblocked
        and not v.connection_closed
    )


class PumpStep(enum.Enum):
    """What a pumping caller does next (one turn of ``_pump_counted``)."""

    RETURN = "return"  # its future is done, or its time is up: leave
    YIELD = "yield"  # another thread wants the connection, or it closes: leave
    DRAIN_TASKS = "drain"  # run the queued tasks first (submission order)
    DISPATCH = "dispatch"  # pika holds callbacks ready: dispatch them
    DO_IO = "io"  # wait for the socket until one of pump_stop's conditions


def pump_step(
    done: bool, want: int, closing: bool, tasks: bool, events: bool, remaining: float
) -> PumpStep:
    """The next step of a pumping caller, in priority order."""
    if done:
        return PumpStep.RETURN
    if want > 0 or closing:
        return PumpStep.YIELD
    if tasks:
        return PumpStep.DRAIN_TASKS
    if events:
        return PumpStep.DISPATCH
    if remaining <= 0:
        return PumpStep.RETURN
    return PumpStep.DO_IO


def pump_stop(
    done: bool, alarm_fired: bool, want: int, tasks: bool, events: bool, closing: bool
) -> bool:
    """When pika's I/O wait inside a pump must end (the six conditions of ``stop()``)."""
    return done or alarm_fired or want > 0 or tasks or events or closing


def serve_may_skip(
    io_due: bool,
    has_connection: bool,
    broken: bool,
    tasks: bool,
    closing: bool,
    events: bool,
    fd_ready: bool,
) -> bool:
    """May the woken I/O thread leave the connection to callers (nothing left to do)?"""
    return (
        not io_due
        and has_connection
        and not broken
        and not tasks
        and not closing
        and not events
        and not fd_ready
    )


class Wake(enum.Enum):
    """How ``submit`` makes sure someone runs the task it queued."""

    NONE = "none"  # a wake-up is pending already, or the I/O thread is at work
    POKE = "poke"  # interrupt pika's poller (idle I/O thread, or a pumping caller)
    SOCKET = "socket"  # no pika connection (recovering): ring hutch's wake-up socket


def submit_wake(wake_pending: bool, io_thread_owns: bool, has_connection: bool) -> Wake:
    """The wake-up a newly queued task needs (given ``_wake_pending`` before queueing)."""
    if wake_pending or io_thread_owns:
        return Wake.NONE
    return Wake.POKE if has_connection else Wake.SOCKET
