"""Shared test helpers. Broker fixtures come from the hutch.testing plugin."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import hutch
from hutch import Clock, Connection
from hutch.testing import Broker, BrokerError, LocalBroker
from tests import forkserver


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
def clock(amqp_url: str) -> Iterator[Clock]:
    """The clock hutch's waits read on ``amqp_url``'s broker: ``time.monotonic()`` on
    RabbitMQ, the memory broker's virtual time under ``--hutch-broker=memory``.

    A test that measures how long a wait took reads ``clock.now()``.
    """
    with hutch.connect(amqp_url) as c:
        yield c.clock


@pytest.fixture
def controllable_broker(hutch_broker: Broker) -> Broker:
    """The session broker, for tests that stop/start it or close connections."""
    if not hutch_broker.supports_control:
        pytest.skip(
            "fault injection needs a broker started by hutch.testing (unset HUTCH_TEST_AMQP_URL)"
        )
    return hutch_broker


@pytest.fixture(scope="session")
def _fault_node() -> Iterator[LocalBroker]:
    """The one node the fault tests share, apart from the session broker (~10 s a start)."""
    broker = LocalBroker()
    try:
        broker.start()
    except BrokerError as exc:
        broker.close()
        pytest.fail(f"fault tests need a local rabbitmq-server node: {exc}", pytrace=False)
    with broker:
        yield broker


@pytest.fixture
def fault_broker(_fault_node: LocalBroker) -> LocalBroker:
    """A broker node apart from the session broker, free to be stopped, restarted and alarmed.

    The fault tests of every module share it. Each one gets it running, whatever the test
    before it left behind: a test that failed while the node was stopped does not fail the
    ones after it. (A test that alarms the node or adds users undoes that itself.)
    """
    _fault_node.start()  # does nothing if it is running
    return _fault_node


def pytest_itemcollected(item: pytest.Item) -> None:
    """Start the fork server's zygote as soon as a test that runs programs in it is collected.

    (A test module that imports :mod:`tests.forkserver`, or declares ``background_programs``.)

    Its start (a Python process importing hutch, ~0.4 s) then overlaps with the rest of
    the collection, on another core, instead of delaying the first such test.
    """
    module = getattr(item, "module", None)
    if getattr(module, "forkserver", None) is forkserver or hasattr(module, "background_programs"):
        forkserver.prestart()
