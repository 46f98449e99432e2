"""Metrics through the OpenTelemetry API: every instrument counts what happened, no more."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch import ConnectionLost, NoServer, RemoteError, RpcTimeout
from hutch._telemetry import (
    ACKED_METRIC,
    CONFIRMED_METRIC,
    CONSUMED_METRIC,
    DEAD_LETTERED_METRIC,
    IN_HAND_METRIC,
    LOSSES_METRIC,
    NACKED_METRIC,
    PROCESS_DURATION_METRIC,
    PUBLISH_DURATION_METRIC,
    RECOVERIES_METRIC,
    REQUEUED_METRIC,
    RETRIED_METRIC,
    RETURNED_METRIC,
    RPC_CLIENT_DURATION_METRIC,
    RPC_SERVER_DURATION_METRIC,
    SENT_METRIC,
    PublishOutcome,
    Settlement,
)
from tests.otel_support import Otel, make_otel, otel

__all__ = ["otel"]


def test_publishes_count_messages_and_time_them(otel: Otel) -> None:
    tel = otel.telemetry
    for _ in range(3):
        with tel.publish_span(exchange="orders", routing_key="a"):
            pass
    with tel.publish_span(exchange="orders", routing_key="a", batch_size=10):
        pass
    with pytest.raises(ConnectionLost):
        with tel.publish_span(exchange="orders", routing_key="a"):
            raise ConnectionLost("gone")
    assert otel.total(SENT_METRIC, messaging__destination__name="orders") == 14
    assert otel.total(SENT_METRIC, error__type="ConnectionLost") == 1
    assert otel.total(PUBLISH_DURATION_METRIC) == 5  # one duration per publish call
    (attrs, _), *_ = otel.points(SENT_METRIC)
    assert "messaging.client.id" not in attrs  # no series per connection name
    assert "messaging.rabbitmq.destination.routing_key" not in attrs  # unbounded


def test_broker_outcomes_are_counted(otel: Otel) -> None:
    tel = otel.telemetry
    tel.record_publish_outcome("orders", PublishOutcome.CONFIRMED, 5)
    tel.record_publish_outcome("orders", PublishOutcome.CONFIRMED)
    tel.record_publish_outcome("orders", PublishOutcome.NACKED, 2)
    tel.record_publish_outcome("", PublishOutcome.RETURNED)
    assert otel.total(CONFIRMED_METRIC, messaging__destination__name="orders") == 6
    assert otel.total(NACKED_METRIC) == 2
    assert otel.total(RETURNED_METRIC, messaging__destination__name="") == 1


@settings(max_examples=30, deadline=None)
@given(outcomes=st.lists(st.sampled_from(list(Settlement)), max_size=25))
def test_handled_messages_are_counted_by_outcome(outcomes: list[Settlement]) -> None:
    rig = make_otel()
    tel = rig.telemetry
    for i, outcome in enumerate(outcomes):
        with tel.process_span(queue="jobs", exchange="", routing_key="jobs", headers=None) as s:
            if i % 2:
                s.settle(outcome, error_type="ValueError", reason="r")
            else:
                s.settle(outcome)
    assert rig.total(CONSUMED_METRIC, messaging__destination__subscription__name="jobs") == len(
        outcomes
    )
    assert rig.total(PROCESS_DURATION_METRIC) == len(outcomes)
    for outcome, metric in [
        (Settlement.ACKED, ACKED_METRIC),
        (Settlement.REQUEUED, REQUEUED_METRIC),
        (Settlement.RETRIED, RETRIED_METRIC),
        (Settlement.DEAD_LETTERED, DEAD_LETTERED_METRIC),
    ]:
        assert rig.total(metric) == outcomes.count(outcome)
    # an ack is not an error; the others carry the exception's type when given
    for attrs, _ in rig.points(ACKED_METRIC):
        assert "error.type" not in attrs
    failed_with_type = sum(
        1 for i, o in enumerate(outcomes) if i % 2 and o is Settlement.DEAD_LETTERED
    )
    assert rig.total(DEAD_LETTERED_METRIC, error__type="ValueError") == failed_with_type


def test_settlements_outside_a_span(otel: Otel) -> None:
    otel.telemetry.record_settlement("jobs", Settlement.ACKED, 40)
    otel.telemetry.record_settlement("jobs", Settlement.DEAD_LETTERED, error_type="DecodeError")
    assert otel.total(ACKED_METRIC, messaging__destination__subscription__name="jobs") == 40
    assert otel.total(DEAD_LETTERED_METRIC, error__type="DecodeError") == 1


def test_messages_in_hand_while_handlers_run(otel: Otel) -> None:
    tel = otel.telemetry
    with tel.process_span(queue="q", exchange="", routing_key="", headers=None):
        with tel.process_span(queue="q", exchange="", routing_key="", headers=None):
            assert otel.total(IN_HAND_METRIC) == 2
        assert otel.total(IN_HAND_METRIC) == 1
    with pytest.raises(RuntimeError):
        with tel.process_span(queue="q", exchange="", routing_key="", headers=None):
            raise RuntimeError("handler bug")
    assert otel.total(IN_HAND_METRIC) == 0  # balanced, also when the handler raised
    assert otel.total(PROCESS_DURATION_METRIC, error__type="RuntimeError") == 1
    assert otel.total(PROCESS_DURATION_METRIC) == 3


def test_handler_duration_is_measured(otel: Otel) -> None:
    import time

    with otel.telemetry.process_span(queue="q", exchange="", routing_key="", headers=None):
        time.sleep(0.05)
    ((_, point),) = otel.points(PROCESS_DURATION_METRIC)
    assert 0.05 <= point.sum < 5  # seconds, the unit the conventions ask for
    assert tuple(point.explicit_bounds)[:3] == (0.005, 0.01, 0.025)


def test_rpc_durations_carry_the_error_type(otel: Otel) -> None:
    tel = otel.telemetry
    with tel.rpc_client_span(procedure="add", service="calc"):
        pass
    for exc in (RpcTimeout("late"), NoServer("nobody"), RpcTimeout("late again")):
        with pytest.raises(type(exc)):
            with tel.rpc_client_span(procedure="add", service="calc"):
                raise exc
    with tel.rpc_client_span(procedure="div", service="calc") as scope:
        scope.fail(RemoteError("ZeroDivisionError", "division by zero"))
    with tel.rpc_server_span(procedure="add", service="calc", headers=None):
        pass
    assert otel.total(RPC_CLIENT_DURATION_METRIC) == 5
    assert otel.total(RPC_CLIENT_DURATION_METRIC, error__type="RpcTimeout") == 2
    assert otel.total(RPC_CLIENT_DURATION_METRIC, error__type="NoServer") == 1
    assert otel.total(RPC_CLIENT_DURATION_METRIC, error__type="RemoteError", rpc__method="div") == 1
    assert otel.total(RPC_SERVER_DURATION_METRIC, rpc__service="calc", rpc__method="add") == 1


def test_connection_losses_and_recoveries(otel: Otel) -> None:
    listen = otel.telemetry.on_connection_event
    listen("lost", ConnectionLost("reset"))
    listen("restored", None)
    listen("lost", None)
    listen("restored", None)
    listen("lost", ConnectionLost("reset"))
    listen("failed", ConnectionLost("gave up"))
    listen("closed", None)
    assert otel.total(LOSSES_METRIC) == 3
    assert otel.total(LOSSES_METRIC, error__type="ConnectionLost") == 2
    assert otel.total(RECOVERIES_METRIC) == 2
