"""Shared test helpers. Broker fixtures come from the hutch.testing plugin."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from hutch import Connection
from hutch.testing import Broker, BrokerError, LocalBroker


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what a test's in-process ``hutch`` command did to logging.

    The CLI puts a handler on the root logger writing to the ``sys.stderr`` of its time,
    which is pytest's capture stream, closed after the test: a later test's log record
    would then fail to print ("I/O operation on closed file").
    """
    loggers = [logging.getLogger(), logging.getLogger("hutch"), logging.getLogger("pika")]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    yield
    for lg, handlers, level in saved:
        for h in lg.handlers[:]:
            if h not in handlers:
                lg.removeHandler(h)
        lg.setLevel(level)


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


@pytest.fixture(scope="module")
def fault_broker() -> Iterator[LocalBroker]:
    """A broker node of the test module's own, free to be restarted and alarmed."""
    broker = LocalBroker()
    try:
        broker.start()
    except BrokerError as exc:
        broker.close()
        pytest.fail(f"fault tests need a local rabbitmq-server node: {exc}", pytrace=False)
    with broker:
        yield broker
