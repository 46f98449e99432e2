"""The pytest side of hutch.testing: fixtures, the report-header line, one-line failures.

A session that cannot get a broker, or whose ``HUTCH_TEST_AMQP_URL`` is refused, stops at
the first test that needs the broker with ONE line naming the cause (``pytest.exit``):
not a traceback per test, and never the password.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

from hutch import AuthenticationError, ConnectError, Connection
from hutch.testing._acquire import acquire_broker
from hutch.testing._base import Broker
from hutch.testing._container import (
    DEFAULT_IMAGE,
    ContainerBroker,
    docker_engine_answers,
)
from hutch.testing._errors import BrokerError
from hutch.testing._external import ExternalBroker
from hutch.testing._install import local_server_installed, why_not_install
from hutch.testing._local import LocalBroker
from hutch.testing._util import INSTALL_ENV, KIND_ENV, URL_ENV, redact

__all__ = [
    "MEMORY_URL",
    "amqp_url",
    "broker_header",
    "describe_broker",
    "external_login_problem",
    "hutch_broker",
    "hutch_connection",
    "hutch_memory_connection",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_report_header",
    "pytest_terminal_summary",
    "unique_name",
]

#: The memory broker the fixtures share under ``--hutch-broker=memory``.
MEMORY_URL = "memory://hutch-tests?clock=virtual"

_RABBITMQ_ONLY = (
    "rabbitmq_only(reason): needs a real RabbitMQ server process; skipped under "
    "--hutch-broker=memory"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--hutch-broker=memory|rabbitmq`` (default ``rabbitmq``).

    Args:
        parser: pytest's option parser.
    """
    parser.addoption(
        "--hutch-broker",
        choices=("rabbitmq", "memory"),
        default="rabbitmq",
        help="run the hutch fixtures (amqp_url, hutch_connection) on RabbitMQ (default) or "
        "on hutch's in-process memory broker (memory://); tests marked rabbitmq_only are "
        "skipped on memory",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``rabbitmq_only`` marker.

    Args:
        config: pytest's configuration.
    """
    config.addinivalue_line("markers", _RABBITMQ_ONLY)


def _on_memory(config: pytest.Config) -> bool:
    return bool(config.getoption("--hutch-broker", default="rabbitmq") == "memory")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--hutch-broker=memory``, skip the tests marked ``rabbitmq_only``.

    Args:
        config: pytest's configuration.
        items: The collected tests.
    """
    if not _on_memory(config):
        return
    for item in items:
        marker = item.get_closest_marker("rabbitmq_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
            item.add_marker(pytest.mark.skip(reason=f"RabbitMQ only: {reason}"))


#: The broker the session fixture handed out, for the terminal summary.
_session_broker: list[Broker] = []


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe_broker(broker: Broker) -> str:
    """Say which broker this is, for people: its kind and its URL without the password.

    Args:
        broker: A broker from :func:`~hutch.testing.acquire_broker` or one of its classes.

    Returns:
        e.g. ``"local node amqp://guest:***@127.0.0.1:41234/%2F"``.
    """
    try:
        where = redact(broker.url)
    except BrokerError:
        where = "(not started)"
    if isinstance(broker, ExternalBroker):
        return f"{where} (from {URL_ENV})"
    if isinstance(broker, ContainerBroker):
        return f"container {where}"
    if isinstance(broker, LocalBroker):
        return f"local node {where}"
    return f"{type(broker).__name__} {where}"


def broker_header(
    environ: Mapping[str, str],
    *,
    docker_answers: bool,
    local_installed: bool,
    install_refusal: str | None,
) -> str:
    """The report-header line: which broker this session uses (pure logic).

    Args:
        environ: The environment variables.
        docker_answers: Whether a Docker engine answers (and testcontainers is installed).
        local_installed: Whether ``rabbitmq-server`` is installed locally.
        install_refusal: Why apt-get may not install it, or ``None`` when it may.

    Returns:
        One line, never with a password.
    """
    url = environ.get(URL_ENV, "").strip()
    if url:
        return f"hutch broker: {redact(url)} (from {URL_ENV})"
    kind = environ.get(KIND_ENV, "auto").strip().lower() or "auto"
    if kind in ("auto", "docker") and docker_answers:
        return f"hutch broker: container ({DEFAULT_IMAGE}), started when a test first needs it"
    if kind == "docker":
        return f"hutch broker: none ({KIND_ENV}=docker, but no Docker engine answers)"
    if local_installed:
        return "hutch broker: local node (rabbitmq-server), started when a test first needs it"
    if install_refusal is None:
        return (
            f"hutch broker: local node, after installing rabbitmq-server with apt-get "
            f"({INSTALL_ENV}=1)"
        )
    return (
        f"hutch broker: none available (no {URL_ENV}, no Docker engine, no rabbitmq-server; "
        f"{install_refusal})"
    )


def pytest_report_header(config: pytest.Config) -> str:
    """Name the broker the session uses, under pytest's own header lines.

    Args:
        config: pytest's configuration (unused).

    Returns:
        The header line.
    """
    if _on_memory(config):
        return f"hutch broker: in-process memory broker ({MEMORY_URL}, --hutch-broker=memory)"
    url_set = bool(os.environ.get(URL_ENV, "").strip())
    kind = os.environ.get(KIND_ENV, "auto").strip().lower()
    return broker_header(
        os.environ,
        docker_answers=not url_set and kind != "local" and docker_engine_answers(),
        local_installed=local_server_installed(),
        install_refusal=why_not_install(),
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say, at the end, which broker the tests actually ran against.

    Args:
        terminalreporter: pytest's terminal reporter.
    """
    if _on_memory(terminalreporter.config):
        terminalreporter.write_line(f"hutch broker used: {MEMORY_URL} (in-process)")
    elif _session_broker:
        terminalreporter.write_line(f"hutch broker used: {describe_broker(_session_broker[0])}")


def external_login_problem(url: str, timeout: float = 10.0) -> str | None:
    """Log in to the broker at ``url`` once; say in one line what is wrong, if anything.

    Args:
        url: The URL from ``HUTCH_TEST_AMQP_URL``.
        timeout: Seconds for the attempt.

    Returns:
        ``None`` when the login works, else one line naming ``HUTCH_TEST_AMQP_URL``, the
        user and the host, never the password.
    """
    parts = urlsplit(url)
    user = parts.username or "guest"
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5672}"
    try:
        Connection(url, connection_name="hutch.testing login check").open(timeout=timeout).close()
    except (ConnectError, ValueError) as exc:
        detail = _one_line(str(exc))
        if parts.password:
            detail = detail.replace(parts.password, "***")
        if not isinstance(exc, ConnectError):
            return f"{URL_ENV} is not a usable AMQP URL: {detail}"
        if not isinstance(exc, AuthenticationError):
            return f"{URL_ENV}: {detail}"
        if "credentials" in detail:
            return f"{URL_ENV}: authentication failed for user {user!r} at {where}: {detail}"
        return f"{URL_ENV}: access refused for user {user!r} at {where}: {detail}"
    return None


def _stop_session(message: str) -> NoReturn:
    # pytest.exit prints one line and ends the session; a failing session fixture would
    # repeat the error (chained to its cause) under every test that uses it.
    pytest.exit(message, returncode=pytest.ExitCode.INTERRUPTED)


@pytest.fixture(scope="session")
def hutch_broker() -> Iterator[Broker]:
    """A RabbitMQ broker for the whole test session (see :mod:`hutch.testing`).

    When none can be had, or ``HUTCH_TEST_AMQP_URL`` refuses the login, the session stops
    with one line saying why.

    Yields:
        The broker; stopped and removed after the session if hutch started it.
    """
    problem: str | None = None
    broker: Broker | None = None
    try:
        broker = acquire_broker()
    except (BrokerError, ValueError) as exc:
        problem = f"hutch.testing: {_one_line(str(exc))}"
    if broker is None:
        _stop_session(problem or "hutch.testing: no broker")
    with broker:
        if isinstance(broker, ExternalBroker):
            problem = external_login_problem(broker.url)
            if problem is not None:
                _stop_session(problem)
        _session_broker[:] = [broker]
        yield broker


@pytest.fixture(scope="session")
def amqp_url(request: pytest.FixtureRequest) -> str:
    """The URL of the session's broker (``amqp://guest:guest@127.0.0.1:PORT/%2F``).

    Under ``--hutch-broker=memory`` it is :data:`MEMORY_URL` and no RabbitMQ is started.

    Returns:
        The URL.
    """
    if _on_memory(request.config):
        return MEMORY_URL
    broker: Broker = request.getfixturevalue("hutch_broker")
    return broker.url


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


@pytest.fixture
def hutch_memory_connection(unique_name: str) -> Iterator[Connection]:
    """An open connection to a fresh in-process memory broker of this test's own.

    No RabbitMQ needed: the broker lives in the test process (``memory://NAME``) and is
    thrown away afterwards. For tests only: see docs/testing.md for what it does not do.

    Yields:
        The connection.
    """
    from hutch._memory import forget_broker

    conn = Connection(f"memory://{unique_name}?clock=virtual", connection_name=unique_name)
    conn.open()
    try:
        yield conn
    finally:
        conn.close()
        forget_broker(unique_name)
