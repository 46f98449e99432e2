"""The ownership rules against a real connection: the states a driver goes through.

The unit tests (tests/unit/test_ownership_rules.py) cover every snapshot without a pika
connection; this covers the ones that need one, on the shared broker.
"""

from __future__ import annotations

import pytest

from hutch import Connection
from hutch._amqp.ownership_rules import ConnState, may_take_direct, reachable, state_of

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.rabbitmq_only("the pika driver's ownership protocol on a real socket"),
]


def test_a_connection_goes_new_open_closed_and_the_driver_agrees_with_the_rules(
    amqp_url: str,
) -> None:
    conn = Connection(amqp_url)
    driver = conn.io
    assert state_of(driver.view()) is ConnState.NEW
    with conn:
        view = driver.view()
        assert reachable(view) and state_of(view) is ConnState.OPEN
        assert driver._direct_ok() is may_take_direct(view) is True
        # a caller that drives the connection is the one in_io_thread names (invariant 1)
        assert driver.call(lambda: driver.in_io_thread, 5) is True
        assert not driver.in_io_thread
    view = driver.view()
    assert reachable(view) and state_of(view) is ConnState.CLOSED
    assert driver._direct_ok() is may_take_direct(view) is False
