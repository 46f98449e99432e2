"""hutch's pytest plugin: a throwaway RabbitMQ broker for your own test suite.

Installed with ``pip install hutch[testing]`` and registered through the ``pytest11`` entry
point, so its fixtures are available without any import:

* ``hutch_broker`` (session): the :class:`~hutch._broker.Broker`, with fault injection
  (``close_connections``, ``stop``, ``start``, ``restart``, ``rabbitmqctl``).
* ``amqp_url`` (session): its URL.
* ``hutch_connection``: an open :class:`~hutch.Connection`, closed after the test.
* ``unique_name``: a name unique to the test, for queues and exchanges.

Outside pytest, :func:`throwaway_broker` gives scripts and demos the same broker.

Where the broker comes from, in this order: the URL in ``HUTCH_TEST_AMQP_URL``;
testcontainers' RabbitMQ container when a Docker engine answers; otherwise a local
``rabbitmq-server`` node started in a temporary directory on free ports (installed with
apt-get when missing and running as root on Debian). A test that needs a broker and
cannot get one fails with instructions; it is never skipped silently.

Example:
    >>> def test_roundtrip(hutch_connection, unique_name):  # doctest: +SKIP
    ...     q = hutch.Queue(unique_name, durable=False, auto_delete=True)
    ...     hutch.Publisher(hutch_connection, declare=[q]).publish(b"x", routing_key=q.name)
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator

import pytest

from hutch._broker import Broker, BrokerError, acquire_broker
from hutch._connection import Connection

__all__ = ["amqp_url", "hutch_broker", "hutch_connection", "throwaway_broker", "unique_name"]


@contextlib.contextmanager
def throwaway_broker() -> Iterator[str]:
    """A RabbitMQ broker for a script, found or started like the test fixtures' one.

    ``HUTCH_TEST_AMQP_URL`` if set, else a Docker container, else a private local
    ``rabbitmq-server`` node (installed with apt-get when missing, as root on Debian). A
    broker started here is stopped and its files removed when the block exits.

    Yields:
        The broker's ``amqp://`` URL.

    Raises:
        hutch._broker.BrokerError: No broker can be had (the message says how to get one),
            or one did not start. A test-harness error, not a :class:`~hutch.HutchError`.

    Example:
        >>> with throwaway_broker() as url:  # doctest: +SKIP
        ...     with hutch.connect(url) as conn:
        ...         ...
    """
    with acquire_broker() as broker:
        yield broker.url


@pytest.fixture(scope="session")
def hutch_broker() -> Iterator[Broker]:
    """A RabbitMQ broker for the whole test session (see the module docstring).

    Yields:
        The broker; stopped and removed after the session if hutch started it.
    """
    try:
        broker = acquire_broker()
    except BrokerError as exc:
        pytest.fail(f"hutch.testing: no RabbitMQ broker available: {exc}", pytrace=False)
    with broker:
        yield broker


@pytest.fixture(scope="session")
def amqp_url(hutch_broker: Broker) -> str:
    """The URL of the session's broker (``amqp://guest:guest@127.0.0.1:PORT/%2F``).

    Returns:
        The URL.
    """
    return hutch_broker.url


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A queue/exchange name unique to this test: ``test_name-1a2b3c4d``.

    Returns:
        The name.
    """
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:80]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def hutch_connection(amqp_url: str, unique_name: str) -> Iterator[Connection]:
    """An open connection named after the test, closed afterwards.

    Yields:
        The connection.
    """
    conn = Connection(amqp_url, connection_name=unique_name)
    conn.open()
    try:
        yield conn
    finally:
        conn.close()
