"""Connection.is_connected for health checks: False while recovering and once closed."""

from __future__ import annotations

import pytest

import hutch
from hutch.testing import LocalBroker
from tests.reliability import wait_until

pytestmark = pytest.mark.timeout(240)


@pytest.mark.rabbitmq_only("stops and restarts a real broker node")
def test_is_connected_follows_loss_and_recovery(fault_broker: LocalBroker) -> None:
    conn = hutch.Connection(fault_broker.url)
    assert not conn.is_connected  # not opened yet
    with conn:
        assert conn.is_connected and conn.is_open
        fault_broker.stop()
        try:
            # is_open stays True while recovering: a probe needs is_connected
            assert wait_until(lambda: not conn.is_connected, 30)
            assert conn.is_open
        finally:
            fault_broker.start()
        assert wait_until(lambda: conn.is_connected, 60)
    assert not conn.is_connected and not conn.is_open
