"""The one lifecycle every resource records (hutch._lifecycle): the transition table as
pure logic, and each resource's state through close() without a broker."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch import ClosedError, ConnectionLost, Publisher, RpcClient, RpcServer, Subscriber
from hutch._amqp.ownership_rules import ConnState, lifecycle_of
from hutch._lifecycle import (
    TRANSITIONS,
    Lifecycle,
    LifecycleError,
    LifecycleState,
    can_move,
)
from hutch._worker_pool import WorkerPool

URL = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens: these tests must do no I/O

L = Lifecycle
LEGAL = {
    (L.NEW, L.OPENING),
    (L.NEW, L.OPEN),
    (L.NEW, L.CLOSING),
    (L.NEW, L.CLOSED),
    (L.OPENING, L.NEW),
    (L.OPENING, L.OPEN),
    (L.OPENING, L.CLOSING),
    (L.OPENING, L.CLOSED),
    (L.OPENING, L.FAILED),
    (L.OPEN, L.CLOSING),
    (L.OPEN, L.CLOSED),
    (L.OPEN, L.FAILED),
    (L.CLOSING, L.CLOSED),
    (L.CLOSING, L.FAILED),
    (L.FAILED, L.CLOSING),
    (L.FAILED, L.CLOSED),
}


def _state_at(target: Lifecycle) -> LifecycleState:
    life = LifecycleState("the thing")
    path = {
        L.NEW: [],
        L.OPENING: [L.OPENING],
        L.OPEN: [L.OPEN],
        L.CLOSING: [L.OPEN, L.CLOSING],
        L.CLOSED: [L.OPEN, L.CLOSED],
        L.FAILED: [L.OPEN, L.FAILED],
    }[target]
    for step in path:
        assert life.move(step)
    assert life.state is target
    return life


# ------------------------------------------------------------------ the table
def test_the_table_is_exactly_the_documented_moves() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == LEGAL
    assert set(TRANSITIONS) == set(Lifecycle)
    assert TRANSITIONS[L.CLOSED] == frozenset()  # final


@pytest.mark.parametrize(("current", "to"), list(itertools.product(Lifecycle, Lifecycle)))
def test_every_move_is_taken_or_refused_by_the_table(current: Lifecycle, to: Lifecycle) -> None:
    life = _state_at(current)
    if to is current or (current is L.CLOSED and to is L.CLOSING):
        assert life.move(to) is False  # staying put, closing again: a no-op
        assert life.state is current
    elif (current, to) in LEGAL:
        assert can_move(current, to)
        assert life.move(to) is True
        assert life.state is to
        assert life.closed is (to in (L.CLOSING, L.CLOSED, L.FAILED))
    else:
        assert not can_move(current, to)
        with pytest.raises(LifecycleError, match=f"illegal lifecycle move {current.value} -> "):
            life.move(to)
        assert life.state is current  # unchanged


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(Lifecycle), max_size=12))
def test_any_sequence_of_moves_follows_the_table(moves: list[Lifecycle]) -> None:
    life = LifecycleState("the thing")
    state = L.NEW
    for to in moves:
        try:
            changed = life.move(to)
        except LifecycleError:
            assert to not in TRANSITIONS[state] and to is not state
            continue
        assert changed is (to is not state and not (state is L.CLOSED and to is L.CLOSING))
        state = life.state
        assert state is to or not changed
    # whatever happened, closing always ends in CLOSED, and again is a no-op
    life.move(L.CLOSING)
    life.move(L.CLOSED)
    assert life.state is L.CLOSED
    assert life.move(L.CLOSING) is False
    assert life.move(L.CLOSED) is False


def test_check_usable_and_check_open() -> None:
    life = LifecycleState("the widget")
    life.check_usable()  # NEW: lazy resources open on first use
    with pytest.raises(ClosedError, match="the widget is not open yet"):
        life.check_open()
    life.move(L.OPEN)
    life.check_open()
    life.move(L.CLOSING)
    with pytest.raises(ClosedError, match=r"^the widget is closed$"):
        life.check_usable()
    with pytest.raises(ClosedError, match=r"^the widget is closed$"):
        life.check_open()
    life.move(L.CLOSED)
    with pytest.raises(ClosedError, match=r"^the widget is closed$"):
        life.check_usable()
    custom = LifecycleState("the server", "the server is closed; create a new one")
    custom.move(L.CLOSED)
    with pytest.raises(ClosedError, match="create a new one"):
        custom.check_usable()


def test_fail_keeps_the_error_and_is_raised_while_failed() -> None:
    life = _state_at(L.OPEN)
    error = ConnectionLost("gone")
    assert life.fail(error) is True
    assert life.state is L.FAILED and life.failure is error and life.closed
    with pytest.raises(ConnectionLost, match="gone"):
        life.check_usable()
    assert life.fail(ConnectionLost("again")) is False  # the first failure stays
    assert life.move(L.CLOSED)
    assert life.failure is error
    with pytest.raises(ClosedError):
        life.check_usable()
    assert life.fail(ConnectionLost("late")) is False


def test_the_connection_states_map_onto_the_one_lifecycle() -> None:
    expected = {
        ConnState.NEW: L.NEW,
        ConnState.CONNECTING: L.OPENING,
        ConnState.OPEN: L.OPEN,
        ConnState.BROKEN: L.OPEN,
        ConnState.RECOVERING: L.OPEN,
        ConnState.CLOSING: L.CLOSING,
        ConnState.CLOSED: L.CLOSED,
        ConnState.FAILED: L.FAILED,
    }
    assert {s: lifecycle_of(s) for s in ConnState} == expected


# ------------------------------------------------------------------ the resources
def _state(resource: Any) -> Lifecycle:
    life = resource._life
    assert isinstance(life, LifecycleState)
    return life.state


def test_resources_record_their_state_with_the_one_enum() -> None:
    publisher = Publisher(URL)
    client = RpcClient(URL)
    subscriber = Subscriber(URL, queue="q")
    server = RpcServer(URL)
    server.register(lambda x: x, name="echo")
    pool = WorkerPool(URL, queue="q", handler=print)
    resources: list[Any] = [publisher, client, subscriber, server, pool]
    for resource in resources:
        assert _state(resource) is L.NEW
        resource.close()
        assert _state(resource) is L.CLOSED, resource
        resource.close()  # idempotent
        assert _state(resource) is L.CLOSED
    assert "stopped" in repr(pool)
    with pytest.raises(ClosedError, match=r"^the publisher is closed$"):
        publisher.publish(b"x")
    with pytest.raises(ClosedError, match=r"^the RPC client is closed$"):
        client.call_raw(b"x")
    with pytest.raises(ClosedError, match=r"^the subscriber is closed$"):
        subscriber.open()
    with pytest.raises(ClosedError, match=r"^the server is closed; create a new one$"):
        server.start()
    with pytest.raises(ClosedError, match=r"^the worker pool was stopped; create a new one$"):
        pool.start()
