"""The ownership protocol's rules, exhaustively over their inputs (no broker, no threads).

The rules (hutch._amqp.ownership_rules) are checked against the state table's promises,
and against the driver itself: a Driver whose fields are set by hand (never started, so
no I/O) must decide as the rules say.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from hutch._amqp import Driver
from hutch._amqp.ownership_rules import (
    ConnState,
    PumpStep,
    View,
    Wake,
    may_take_direct,
    pump_step,
    pump_stop,
    reachable,
    serve_may_skip,
    state_of,
    submit_wake,
)
from hutch._settings import ConnectionSettings

FIELDS = list(View.__dataclass_fields__)
ALL_VIEWS = [
    v
    for v in (View(*bits) for bits in itertools.product([False, True], repeat=len(FIELDS)))
    if reachable(v)
]


def test_every_snapshot_is_in_exactly_one_state() -> None:
    for v in ALL_VIEWS:
        assert isinstance(state_of(v), ConnState)


def test_a_caller_takes_the_connection_only_when_open_and_unblocked() -> None:
    for v in ALL_VIEWS:
        if may_take_direct(v):
            assert state_of(v) is ConnState.OPEN, v
            assert v.unblocked and not v.closing and not v.broken and not v.recovering
        elif state_of(v) is ConnState.OPEN:
            assert not v.unblocked, v  # OPEN and refused: only while the broker blocks


@pytest.mark.parametrize("state", [ConnState.CLOSING, ConnState.CLOSED, ConnState.RECOVERING])
def test_no_direct_path_while_closing_closed_or_recovering(state: ConnState) -> None:
    assert not any(may_take_direct(v) for v in ALL_VIEWS if state_of(v) is state)


def test_pump_priorities() -> None:
    for done, want, closing, tasks, events in itertools.product([False, True], repeat=5):
        for remaining in (-1.0, 0.0, 0.5):
            step = pump_step(done, int(want), closing, tasks, events, remaining)
            if done:
                assert step is PumpStep.RETURN
            elif want or closing:
                assert step is PumpStep.YIELD  # a waiter never waits for a whole pump
            elif tasks:
                assert step is PumpStep.DRAIN_TASKS  # queued work before new I/O (order)
            elif events:
                assert step is PumpStep.DISPATCH
            else:
                assert step is (PumpStep.RETURN if remaining <= 0 else PumpStep.DO_IO)


def test_io_wait_ends_on_any_of_six_conditions() -> None:
    for bits in itertools.product([False, True], repeat=6):
        done, fired, want, tasks, events, closing = bits
        assert pump_stop(done, fired, int(want), tasks, events, closing) is any(bits)


def test_the_io_thread_leaves_the_connection_only_with_nothing_to_do() -> None:
    for bits in itertools.product([False, True], repeat=7):
        io_due, has_conn, broken, tasks, closing, events, fd_ready = bits
        skip = serve_may_skip(*bits)
        assert skip is (has_conn and not any((io_due, broken, tasks, closing, events, fd_ready)))


def test_a_queued_task_is_never_left_without_a_wake_up() -> None:
    for pending, io_owns, has_conn in itertools.product([False, True], repeat=3):
        wake = submit_wake(pending, io_owns, has_conn)
        if not pending and not io_owns:
            assert wake is not Wake.NONE
        if wake is Wake.POKE:
            assert has_conn


def _driver() -> Driver:
    return Driver(ConnectionSettings.from_url("amqp://guest:guest@127.0.0.1:1/"), "rules")


def test_a_new_driver_is_new_and_refuses_callers() -> None:
    d = _driver()
    assert reachable(d.view()) and state_of(d.view()) is ConnState.NEW
    assert not d._direct_ok()


def _open(d: Driver) -> None:
    d._opened.set_result(None)
    d._opened_ok = True


def test_without_a_connection_no_snapshot_lets_a_caller_take_it() -> None:
    """``_direct_ok`` (inline on the hot path) and ``may_take_direct`` agree: both refuse.

    Every combination of the fields is set by hand on a driver that has no pika connection
    (none exists without a broker; tests/integration/test_ownership.py checks OPEN on a
    real one), and the snapshot's state must say why.
    """
    import threading

    flips: dict[str, Callable[[Driver], object]] = {
        "started": lambda d: setattr(d, "_thread", threading.current_thread()),
        "opened": _open,
        "broken": lambda d: setattr(d, "_broken", OSError("gone")),
        "recovering": lambda d: setattr(d, "_down_since", 1.0),
        "closing": lambda d: setattr(d, "_closing", True),
        "closed": lambda d: d._closed.set(),
        "blocked": lambda d: d._unblocked.clear(),
    }
    for bits in itertools.product([False, True], repeat=len(flips)):
        d = _driver()
        for on, flip in zip(bits, flips.values(), strict=True):
            if on:
                flip(d)
        v = d.view()
        assert d._direct_ok() is may_take_direct(v) is False, v
        if reachable(v):
            state = state_of(v)
            assert state is not ConnState.OPEN  # OPEN needs a connection
            if v.closing:
                assert state in (ConnState.CLOSING, ConnState.CLOSED, ConnState.FAILED)


def test_submit_queues_in_order_and_wakes_once_until_drained() -> None:
    """INV-7: a task queued while no wake-up is pending rings the wake socket once."""
    import socket

    d = _driver()
    d._wake_r, d._wake_w = socket.socketpair()
    d._wake_r.setblocking(False)
    try:
        ran: list[int] = []
        d.submit(lambda: ran.append(1))
        assert d._wake_pending and d._wake.is_set()
        assert d._wake_r.recv(16) == b"x"  # no pika connection: hutch's own socket
        d.submit(lambda: ran.append(2))
        with pytest.raises(BlockingIOError):  # a wake-up is pending: no second one
            d._wake_r.recv(16)
        for task in list(d._tasks):
            task()
        assert ran == [1, 2]
    finally:
        d._wake_r.close()
        d._wake_w.close()
