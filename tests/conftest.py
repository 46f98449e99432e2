"""Shared test helpers. Broker fixtures come from the hutch.testing plugin."""

from __future__ import annotations

import pytest

from hutch import Connection
from hutch._broker import Broker


@pytest.fixture
def conn(hutch_connection: Connection) -> Connection:
    """Short alias of hutch_connection."""
    return hutch_connection


@pytest.fixture
def controllable_broker(hutch_broker: Broker) -> Broker:
    """The session broker, for tests that stop/start it or close connections."""
    if not hutch_broker.supports_control:
        pytest.skip(
            "fault injection needs a broker started by hutch.testing (unset HUTCH_TEST_AMQP_URL)"
        )
    return hutch_broker
