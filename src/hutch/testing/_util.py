"""Shared helpers of the test brokers: environment names, free ports, TCP probes, redaction.

Nothing here imports pika or the rest of hutch, so the harness cannot be broken by the code
it tests.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from hutch.testing._errors import BrokerControlError, BrokerStartError

__all__ = [
    "BIN_DIR_ENV",
    "HOST",
    "INSTALL_ENV",
    "KIND_ENV",
    "LOG_TAIL_LINES",
    "RESERVED_PORTS",
    "URL_ENV",
    "call_with_timeout",
    "ephemeral_range",
    "pick_port",
    "redact",
    "tail",
    "tcp_accepts",
]

_T = TypeVar("_T")

#: Environment variable naming an existing broker to test against.
URL_ENV = "HUTCH_TEST_AMQP_URL"
#: Environment variable forcing the kind of broker: ``auto``, ``docker`` or ``local``.
KIND_ENV = "HUTCH_TEST_BROKER"
#: Environment variable overriding the directory holding ``rabbitmq-server``.
BIN_DIR_ENV = "HUTCH_RABBITMQ_BIN_DIR"
#: Environment variable allowing hutch to install ``rabbitmq-server`` with apt-get (``1``).
INSTALL_ENV = "HUTCH_TEST_INSTALL_BROKER"

HOST = "127.0.0.1"
LOG_TAIL_LINES = 40
# Ports never handed out: epmd, RabbitMQ defaults, and the range rabbitmqctl's own
# Erlang node listens on (RABBITMQ_CTL_DIST_PORT_MIN..MAX defaults).
RESERVED_PORTS = frozenset({4369, 5671, 5672, 15671, 15672, 25672, *range(35672, 35683)})
_handed_out_ports: set[int] = set()
_ports_lock = threading.Lock()


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            low, high = (int(x) for x in fh.read().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def _port_is_free(port: int) -> bool:
    # Bind without SO_REUSEADDR on all interfaces: fails if anything (even a socket
    # in TIME_WAIT) holds the port, which is the conservative answer we want.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))  # probing only, never listening
        except OSError:
            return False
    return True


def pick_port() -> int:
    """Return a free TCP port outside the ephemeral range, never twice per process."""
    # Not port_for, and not binding to port 0: both can hand out ephemeral ports,
    # which a client's outgoing connection may occupy while the node is stopped.
    low, high = ephemeral_range()
    ranges = [(r_lo, r_hi) for r_lo, r_hi in ((10000, low - 1), (high + 1, 65535)) if r_hi > r_lo]
    rng = random.SystemRandom()
    with _ports_lock:
        for _ in range(500):
            r_lo, r_hi = rng.choice(ranges) if ranges else (1024, 65535)
            port = rng.randint(r_lo, r_hi)
            if port in RESERVED_PORTS or port in _handed_out_ports:
                continue
            if _port_is_free(port):
                _handed_out_ports.add(port)
                return port
    raise BrokerStartError("could not find a free TCP port")


def tcp_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


def call_with_timeout(fn: Callable[[], _T], timeout: float, what: str) -> _T:
    """Run ``fn`` in a daemon thread; raise BrokerControlError if it outlasts ``timeout``."""
    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name=f"hutch-broker-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise BrokerControlError(f"{what} did not finish within {timeout:g} s")
    if error:
        raise error[0]
    return result[0]
