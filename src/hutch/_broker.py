"""Throwaway RabbitMQ brokers for tests: find one, start one, break one on purpose.

This module backs hutch's pytest plugin (:mod:`hutch.testing`). It speaks to
RabbitMQ only through ``rabbitmqctl`` and TCP, never through pika, and imports
nothing else from hutch, so the harness cannot be broken by the code it tests.

:func:`acquire_broker` picks, in order:

1. the broker named by ``HUTCH_TEST_AMQP_URL`` (:class:`ExternalBroker`; no fault
   injection possible),
2. a container, when a Docker engine answers and ``testcontainers`` is installed
   (:class:`ContainerBroker`),
3. a private node of a locally installed ``rabbitmq-server`` (:class:`LocalBroker`),
   installing the Debian package with ``apt-get`` when it is missing and we are
   root on Debian.

``HUTCH_TEST_BROKER`` (``auto``, ``docker`` or ``local``) forces step 2 or 3.

A :class:`LocalBroker` runs ``rabbitmq-server`` directly (not the Debian wrapper
that switches to the ``rabbitmq`` user) with every path (data, logs, config,
enabled plugins, pid file, Erlang cookie in a private ``HOME``) inside one
temporary directory, on free ports chosen outside the kernel's ephemeral range
so that a client's outgoing connection cannot take the port while the node is
stopped. The shared ``epmd`` daemon that Erlang starts is left running.

Errors raised here are test-harness errors, not hutch run-time errors::

    BrokerError
    ├── BrokerStartError      a node or container did not come up (log_tail)
    ├── BrokerUnavailable     no way to get a broker on this machine
    └── BrokerControlError    rabbitmqctl failed, or the broker cannot be controlled

Example:
    >>> with LocalBroker() as broker:  # doctest: +SKIP
    ...     broker.url
    ...     broker.close_connections("worker")
    ...     broker.restart()
"""

from __future__ import annotations

import abc
import atexit
import csv
import importlib.util
import io
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "Broker",
    "BrokerControlError",
    "BrokerError",
    "BrokerStartError",
    "BrokerUnavailable",
    "ContainerBroker",
    "ExternalBroker",
    "LocalBroker",
    "LocalCluster",
    "TlsFiles",
    "acquire_broker",
]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")
_B = TypeVar("_B", bound="Broker")
_C = TypeVar("_C", bound="LocalCluster")
_L = TypeVar("_L", bound="LocalBroker")

#: Environment variable naming an existing broker to test against.
URL_ENV = "HUTCH_TEST_AMQP_URL"
#: Environment variable forcing the kind of broker: ``auto``, ``docker`` or ``local``.
KIND_ENV = "HUTCH_TEST_BROKER"
#: Environment variable overriding the directory holding ``rabbitmq-server``.
BIN_DIR_ENV = "HUTCH_RABBITMQ_BIN_DIR"

_DEFAULT_BIN_DIR = "/usr/lib/rabbitmq/bin"
_DEFAULT_IMAGE = "rabbitmq:3.13"
_HOST = "127.0.0.1"
_LOG_TAIL_LINES = 40
# Ports never handed out: epmd, RabbitMQ defaults, and the range rabbitmqctl's own
# Erlang node listens on (RABBITMQ_CTL_DIST_PORT_MIN..MAX defaults).
_RESERVED_PORTS = frozenset({4369, 5671, 5672, 15671, 15672, 25672, *range(35672, 35683)})
_handed_out_ports: set[int] = set()
_ports_lock = threading.Lock()
_install_lock = threading.Lock()


# --------------------------------------------------------------------------- errors


class BrokerError(Exception):
    """Base class of the test-harness broker errors."""


class BrokerStartError(BrokerError):
    """A broker node or container did not become ready.

    Attributes:
        log_tail: The last lines of the broker's log, or ``""`` when unknown.
    """

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        full = (
            f"{message}\n--- last lines of the broker log ---\n{log_tail}" if log_tail else message
        )
        super().__init__(full)
        self.log_tail = log_tail


class BrokerUnavailable(BrokerError):
    """No broker can be had on this machine; the message says how to get one."""


class BrokerControlError(BrokerError):
    """A control operation failed, or this broker cannot be controlled at all.

    Attributes:
        command: The command that failed, or ``()`` when none was run.
        returncode: Its exit status, or ``None`` (timeout, or not run).
        stderr: What it wrote to standard error (or standard output when it wrote
            nothing to standard error).
    """

    def __init__(
        self,
        message: str,
        *,
        command: tuple[str, ...] = (),
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(f"{message}\n{stderr.strip()}" if stderr.strip() else message)
        self.command = command
        self.returncode = returncode
        self.stderr = stderr


# --------------------------------------------------------------------------- helpers


def _redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _ephemeral_range() -> tuple[int, int]:
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


def _pick_port() -> int:
    """Return a free TCP port outside the ephemeral range, never twice per process."""
    # Not port_for, and not binding to port 0: both can hand out ephemeral ports,
    # which a client's outgoing connection may occupy while the node is stopped.
    low, high = _ephemeral_range()
    ranges = [(r_lo, r_hi) for r_lo, r_hi in ((10000, low - 1), (high + 1, 65535)) if r_hi > r_lo]
    rng = random.SystemRandom()
    with _ports_lock:
        for _ in range(500):
            r_lo, r_hi = rng.choice(ranges) if ranges else (1024, 65535)
            port = rng.randint(r_lo, r_hi)
            if port in _RESERVED_PORTS or port in _handed_out_ports:
                continue
            if _port_is_free(port):
                _handed_out_ports.add(port)
                return port
    raise BrokerStartError("could not find a free TCP port")


def _tcp_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: str, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


def _call_with_timeout(fn: Callable[[], _T], timeout: float, what: str) -> _T:
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


def _connection_name(client_properties: object) -> str | None:
    # rabbitmqctl's JSON formatter renders an AMQP table as [[key, type, value], ...].
    if not isinstance(client_properties, list):
        return None
    for entry in client_properties:
        if isinstance(entry, list) and len(entry) == 3 and entry[0] == "connection_name":
            value = entry[2]
            return value if isinstance(value, str) else str(value)
    return None


# --------------------------------------------------------------------------- base


class Broker(abc.ABC):
    """A RabbitMQ broker that tests can connect to and, when allowed, break.

    Subclasses decide where the broker lives. All of them are context managers
    whose ``__exit__`` calls :meth:`close`. Methods block; they may be called from
    any thread, but not concurrently on one broker. No method here acks or
    touches messages.

    Attributes:
        supports_control: ``False`` when the broker was not started by hutch, so
            ``rabbitmqctl``, :meth:`stop`, :meth:`start` and
            :meth:`close_connections` raise :class:`BrokerControlError`.
    """

    supports_control: bool = True

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The AMQP URL of the broker, e.g. ``amqp://guest:guest@127.0.0.1:5672/%2F``."""

    @abc.abstractmethod
    def rabbitmqctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run ``rabbitmqctl`` against this broker's node.

        Args:
            *args: The command and its arguments, e.g. ``"list_queues", "name"``.
            timeout: Seconds to wait for the command to finish.

        Returns:
            What the command wrote to standard output.

        Raises:
            BrokerControlError: The command failed or timed out (carries stderr),
                or this broker cannot be controlled.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the broker, keeping its data, so that clients see it go away.

        Raises:
            BrokerControlError: This broker cannot be controlled.
        """

    @abc.abstractmethod
    def start(self) -> None:
        """Start the broker (again, on the same ports and data) and wait until it serves AMQP.

        Raises:
            BrokerStartError: It did not become ready in time.
            BrokerControlError: This broker cannot be controlled.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Tear the broker down for good. Idempotent."""

    def restart(self) -> None:
        """Stop the broker and start it again on the same ports and data.

        Raises:
            BrokerStartError: It did not come back in time.
            BrokerControlError: This broker cannot be controlled.
        """
        self.stop()
        self.start()

    def list_connection_names(self) -> list[str]:
        """Return the client-provided names of the open client connections.

        Connections opened without a ``connection_name`` client property are
        left out.

        Returns:
            The names, in the broker's order (duplicates kept).

        Raises:
            BrokerControlError: ``rabbitmqctl`` failed, or this broker cannot be
                controlled.
        """
        return [name for _, name in self._named_connections() if name is not None]

    def close_connections(
        self, name_contains: str | None = None, reason: str = "closed by test"
    ) -> int:
        """Close client connections from the broker side, as an operator would.

        The clients receive ``connection.close`` with reply code 320
        (CONNECTION_FORCED) and ``reason``.

        Args:
            name_contains: Close only connections whose client-provided
                ``connection_name`` contains this text; ``None`` closes all.
            reason: The explanation sent to the clients.

        Returns:
            How many connections were asked to close.

        Raises:
            BrokerControlError: ``rabbitmqctl`` failed, or this broker cannot be
                controlled.

        Example:
            >>> broker.close_connections("orders-worker")  # doctest: +SKIP
            1
        """
        wanted = {
            conn
            for conn, name in self._named_connections()
            if name_contains is None or (name is not None and name_contains in name)
        }
        if not wanted:
            return 0
        # The JSON formatter prints pids in a form close_connection does not accept;
        # the CSV one prints them as <node.creation.id.serial>, so join on the
        # connection's unique "ip:port -> ip:port" name.
        out = self.rabbitmqctl("list_connections", "-q", "--formatter", "csv", "pid", "name")
        closed = 0
        for row in csv.reader(io.StringIO(out)):
            if len(row) != 2 or row == ["pid", "name"] or row[1] not in wanted:
                continue
            try:
                self.rabbitmqctl("close_connection", row[0], reason)
            except BrokerControlError as exc:
                _log.debug("close_connection %s failed (already gone?): %s", row[0], exc)
                continue
            closed += 1
        _log.info("closed %d broker connection(s) matching %r", closed, name_contains)
        return closed

    def _named_connections(self) -> list[tuple[str, str | None]]:
        out = self.rabbitmqctl(
            "list_connections", "-q", "--formatter", "json", "name", "client_properties"
        )
        text = out.strip()
        if not text:
            return []
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BrokerControlError(
                "cannot parse rabbitmqctl list_connections output", stderr=text
            ) from exc
        result: list[tuple[str, str | None]] = []
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and isinstance(row.get("name"), str):
                result.append((row["name"], _connection_name(row.get("client_properties"))))
        return result

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        try:
            where = _redact(self.url)
        except BrokerError:
            where = "not started"
        return f"<{type(self).__name__} {where}>"


# Brokers that own a process or container, torn down at interpreter exit at the latest.
_live: set[Broker] = set()
_live_lock = threading.Lock()


def _track(broker: Broker) -> None:
    with _live_lock:
        _live.add(broker)


def _untrack(broker: Broker) -> None:
    with _live_lock:
        _live.discard(broker)


@atexit.register
def _close_all_at_exit() -> None:
    with _live_lock:
        brokers = list(_live)
    for broker in brokers:
        try:
            broker.close()
        except Exception:  # best effort while the interpreter exits
            _log.debug("closing %r at exit failed", broker, exc_info=True)


# --------------------------------------------------------------------------- external


class ExternalBroker(Broker):
    """A broker hutch did not start, named by a URL (usually ``HUTCH_TEST_AMQP_URL``).

    Tests can connect to it, but fault injection (``rabbitmqctl``, :meth:`stop`,
    :meth:`start`, :meth:`close_connections`) raises :class:`BrokerControlError`,
    because hutch cannot reach the node behind the URL. :meth:`close` does nothing
    to the broker.

    Args:
        url: An ``amqp://`` or ``amqps://`` URL.

    Raises:
        ValueError: ``url`` is not an AMQP URL.
    """

    supports_control = False

    def __init__(self, url: str) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("amqp", "amqps"):
            raise ValueError(f"not an AMQP URL (amqp:// or amqps://): {_redact(url)!r}")
        self._url = url

    @property
    def url(self) -> str:
        """The URL given to the constructor."""
        return self._url

    def _refuse(self, what: str) -> BrokerControlError:
        return BrokerControlError(
            f"cannot {what}: the broker at {_redact(self._url)} was not started by hutch. "
            f"Fault injection needs a broker hutch starts itself: unset {URL_ENV} and let "
            "hutch start a container (Docker) or a local rabbitmq-server node."
        )

    def rabbitmqctl(self, *args: str, timeout: float = 30.0) -> str:
        """Always raises: an external broker cannot be controlled.

        Args:
            *args: Ignored.
            timeout: Ignored.

        Returns:
            Never returns.

        Raises:
            BrokerControlError: Always.
        """
        raise self._refuse("run rabbitmqctl")

    def stop(self) -> None:
        """Always raises: an external broker cannot be stopped.

        Raises:
            BrokerControlError: Always.
        """
        raise self._refuse("stop the broker")

    def start(self) -> None:
        """Always raises: an external broker cannot be started.

        Raises:
            BrokerControlError: Always.
        """
        raise self._refuse("start the broker")

    def close_connections(
        self, name_contains: str | None = None, reason: str = "closed by test"
    ) -> int:
        """Always raises: hutch cannot close connections on an external broker.

        Args:
            name_contains: Ignored.
            reason: Ignored.

        Returns:
            Never returns.

        Raises:
            BrokerControlError: Always.
        """
        raise self._refuse("close connections from the broker side")

    def close(self) -> None:
        """Forget the broker; it keeps running."""


# --------------------------------------------------------------------------- local node


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS listener on a :class:`LocalBroker`.

    Attributes:
        ca_cert: The CA certificate(s) used to verify client certificates.
        server_cert: The server's certificate.
        server_key: The server's private key (unencrypted).
    """

    ca_cert: str
    server_cert: str
    server_key: str


def _bin_dir() -> str:
    return os.environ.get(BIN_DIR_ENV) or _DEFAULT_BIN_DIR


def _local_server_installed() -> bool:
    return os.access(os.path.join(_bin_dir(), "rabbitmq-server"), os.X_OK)


def _can_install() -> bool:
    return (
        hasattr(os, "geteuid")
        and os.geteuid() == 0
        and os.path.exists("/etc/debian_version")
        and shutil.which("apt-get") is not None
        and BIN_DIR_ENV not in os.environ
    )


_HOW_TO_GET_A_BROKER = (
    f"Set {URL_ENV}=amqp://user:password@host:5672/%2F to use a running broker, "
    "or start a Docker engine (with `pip install 'testcontainers[rabbitmq]'`), "
    "or install RabbitMQ locally (`apt-get install rabbitmq-server` on Debian/Ubuntu; "
    f"set {BIN_DIR_ENV} if rabbitmq-server lives somewhere else than {_DEFAULT_BIN_DIR})."
)


def _ensure_local_server() -> None:
    """Make sure ``rabbitmq-server`` is installed, installing it with apt-get if possible.

    Raises:
        BrokerUnavailable: It is missing and cannot be installed.
    """
    if _local_server_installed():
        return
    if not _can_install():
        raise BrokerUnavailable(
            f"no rabbitmq-server in {_bin_dir()} and cannot install it "
            f"(needs root on Debian). {_HOW_TO_GET_A_BROKER}"
        )
    import fcntl  # POSIX only; imported here so the module loads everywhere

    with _install_lock, open(os.path.join(tempfile.gettempdir(), "hutch-apt.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer across pytest-xdist workers
        if _local_server_installed():
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd, timeout in (
            (["apt-get", "update"], 600.0),
            (["apt-get", "install", "-y", "--no-install-recommends", "rabbitmq-server"], 900.0),
        ):
            _log.info("running %s", " ".join(cmd))
            try:
                done = subprocess.run(
                    cmd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise BrokerUnavailable(f"{' '.join(cmd)} failed: {exc}") from exc
            if done.returncode != 0:
                # The package's postinst may fail to start the system service when
                # there is no init system; the files we need are there all the same.
                _log.warning("%s exited %d: %s", cmd[1], done.returncode, done.stderr[-2000:])
        if not _local_server_installed():
            raise BrokerUnavailable(
                f"apt-get install rabbitmq-server did not provide {_bin_dir()}/rabbitmq-server. "
                f"{_HOW_TO_GET_A_BROKER}"
            )


class LocalBroker(Broker):
    """A private RabbitMQ node run from the local ``rabbitmq-server`` installation.

    The constructor does no I/O. The first :meth:`start` creates the node's
    directory (``base_dir`` or a new temporary one) and picks free ports;
    later starts reuse both, so clients can reconnect to the same URL and find
    durable queues and persistent messages again. :meth:`close` kills the node
    and removes the temporary directory; an ``atexit`` hook does the same for
    nodes left open. Entering the context manager starts the node if it never
    started.

    Methods block (:meth:`start` about 6-8 s). Call them from one thread at a
    time per broker; different brokers are independent.

    Args:
        node_name: Erlang node name; default ``hutch-<random>@localhost``.
        amqp_port: AMQP port; default a free port chosen at first start.
        dist_port: Erlang distribution port; default a free port.
        base_dir: Directory for all of the node's files. Default: a temporary
            directory removed by :meth:`close` (a given one is kept).
        extra_config: Lines appended to the generated ``rabbitmq.conf``.
        tls: Certificates for an additional TLS listener on :attr:`tls_port`.
        erlang_cookie: Erlang cookie; nodes that should cluster need the same one.
            Default: a random cookie.
        startup_timeout: Seconds :meth:`start` waits for the node to be ready.

    Raises:
        ValueError: An argument is out of range.

    Example:
        >>> with LocalBroker() as broker:  # doctest: +SKIP
        ...     connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    """

    def __init__(
        self,
        *,
        node_name: str | None = None,
        amqp_port: int | None = None,
        dist_port: int | None = None,
        base_dir: str | None = None,
        extra_config: str = "",
        tls: TlsFiles | None = None,
        erlang_cookie: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        for label, port in (("amqp_port", amqp_port), ("dist_port", dist_port)):
            if port is not None and not 0 < port < 65536:
                raise ValueError(f"{label} must be in 1..65535, got {port}")
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be positive, got {startup_timeout}")
        if node_name is None:
            node_name = f"hutch-{secrets.token_hex(4)}@localhost"
        elif "@" not in node_name:
            node_name = f"{node_name}@localhost"
        if erlang_cookie is not None and (
            not erlang_cookie or not erlang_cookie.isascii() or not erlang_cookie.isalnum()
        ):
            raise ValueError("erlang_cookie must be non-empty ASCII letters and digits")
        self.node_name = node_name
        self._amqp_port = amqp_port
        self._dist_port = dist_port
        self._tls_port: int | None = None
        self._base_dir = base_dir
        self._owns_base_dir = base_dir is None
        self._extra_config = extra_config
        self._tls = tls
        self._cookie = erlang_cookie or "".join(
            secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(32)
        )
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._env: dict[str, str] | None = None
        self._prepared = False
        self._closed = False
        self._lock = threading.RLock()

    # -- attributes -------------------------------------------------------------

    def _require_prepared(self, what: str) -> str:
        if self._base_dir is None or not self._prepared:
            raise BrokerError(f"{what} is known once the broker has been started")
        return self._base_dir

    @property
    def amqp_port(self) -> int:
        """The AMQP port on 127.0.0.1 (fixed at construction or first start).

        Raises:
            BrokerError: No port was given and the node never started.
        """
        if self._amqp_port is None:
            raise BrokerError("amqp_port is known once the broker has been started")
        return self._amqp_port

    @property
    def dist_port(self) -> int:
        """The Erlang distribution port.

        Raises:
            BrokerError: No port was given and the node never started.
        """
        if self._dist_port is None:
            raise BrokerError("dist_port is known once the broker has been started")
        return self._dist_port

    @property
    def tls_port(self) -> int | None:
        """The AMQPS port on 127.0.0.1, or ``None`` without ``tls`` (or before start)."""
        return self._tls_port

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:<amqp_port>/%2F``.

        Raises:
            BrokerError: No port was given and the node never started.
        """
        return f"amqp://guest:guest@{_HOST}:{self.amqp_port}/%2F"

    @property
    def tls_url(self) -> str | None:
        """``amqps://guest:guest@localhost:<tls_port>/%2F``, or ``None`` without TLS."""
        if self._tls_port is None:
            return None
        return f"amqps://guest:guest@localhost:{self._tls_port}/%2F"

    @property
    def base_dir(self) -> str:
        """The directory holding all of the node's files.

        Raises:
            BrokerError: It was not given and the node never started.
        """
        return self._require_prepared("base_dir")

    @property
    def log_path(self) -> str:
        """The node's main log file.

        Raises:
            BrokerError: The node never started.
        """
        return os.path.join(self._require_prepared("log_path"), "log", "rabbit.log")

    @property
    def is_running(self) -> bool:
        """Whether the node's process is alive (it may still be booting)."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --------------------------------------------------------------

    def __enter__(self: _L) -> _L:
        if not self._prepared:
            self.start()
        return self

    def _prepare(self) -> None:
        """Create the directory, config and cookie, and fix the ports (first start only)."""
        _ensure_local_server()
        if self._base_dir is None:
            self._base_dir = tempfile.mkdtemp(prefix="hutch-rabbitmq-")
        base = self._base_dir
        home = os.path.join(base, "home")
        for sub in ("home", "mnesia", "log"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        if self._amqp_port is None:
            self._amqp_port = _pick_port()
        if self._dist_port is None:
            self._dist_port = _pick_port()
        if self._tls is not None and self._tls_port is None:
            self._tls_port = _pick_port()

        cookie_path = os.path.join(home, ".erlang.cookie")
        if os.path.exists(cookie_path):
            os.chmod(cookie_path, 0o600)
        with open(cookie_path, "w", encoding="ascii") as fh:
            fh.write(self._cookie)
        os.chmod(cookie_path, 0o400)

        conf = [
            "loopback_users = none",
            f"listeners.tcp.default = {_HOST}:{self._amqp_port}",
            "log.console = false",
            "log.file.level = info",
        ]
        if self._tls is not None:
            conf += [
                f"listeners.ssl.default = {_HOST}:{self._tls_port}",
                f"ssl_options.cacertfile = {self._tls.ca_cert}",
                f"ssl_options.certfile = {self._tls.server_cert}",
                f"ssl_options.keyfile = {self._tls.server_key}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        with open(os.path.join(base, "rabbitmq.conf"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(conf) + "\n" + self._extra_config + "\n")
        with open(os.path.join(base, "enabled_plugins"), "w", encoding="ascii") as fh:
            fh.write("[].\n")
        # An empty env file so /etc/rabbitmq/rabbitmq-env.conf is not read.
        open(os.path.join(base, "rabbitmq-env.conf"), "w").close()

        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        if not env.get("LC_ALL") and not env.get("LANG"):
            env["LANG"] = "C.UTF-8"  # the Elixir CLI complains under a latin1 locale
        env.update(
            HOME=home,
            RABBITMQ_NODENAME=self.node_name,
            RABBITMQ_NODE_IP_ADDRESS=_HOST,
            RABBITMQ_NODE_PORT=str(self._amqp_port),
            RABBITMQ_DIST_PORT=str(self._dist_port),
            RABBITMQ_MNESIA_BASE=os.path.join(base, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(base, "log"),
            RABBITMQ_LOGS=os.path.join(base, "log", "rabbit.log"),
            RABBITMQ_SASL_LOGS=os.path.join(base, "log", "sasl.log"),
            RABBITMQ_CONFIG_FILE=os.path.join(base, "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(base, "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(base, "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=os.path.join(base, "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=os.path.join(base, "rabbitmq.pid"),
            # Erlang distribution only on loopback: nobody else needs to reach the node.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        self._env = env
        self._prepared = True

    def start(self) -> None:
        """Start the node and block until it accepts AMQP connections and has booted.

        The first call creates the node's directory and picks its ports; later
        calls reuse them. Does nothing if the node is already running.

        Raises:
            BrokerStartError: The node exited or was not ready within
                ``startup_timeout`` (the message ends with the log's last lines).
            BrokerUnavailable: ``rabbitmq-server`` is missing and cannot be installed.
            BrokerError: The broker was closed.
        """
        with self._lock:
            if self._closed:
                raise BrokerError(f"{self!r} is closed")
            if self.is_running:
                return
            if not self._prepared:
                self._prepare()
            assert self._env is not None
            assert self._base_dir is not None
            began = time.monotonic()
            _log.info("starting RabbitMQ node %s on port %s", self.node_name, self._amqp_port)
            console = open(os.path.join(self._base_dir, "log", "console.log"), "ab")  # noqa: SIM115
            # Plain Popen rather than a mirakuru executor: readiness needs
            # `rabbitmqctl await_startup` and a graceful stop needs `rabbitmqctl
            # stop`, so an executor would add a dependency and little else.
            try:
                self._proc = subprocess.Popen(
                    [os.path.join(_bin_dir(), "rabbitmq-server")],
                    env=self._env,
                    cwd=self._base_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise BrokerStartError(f"cannot run rabbitmq-server: {exc}") from exc
            finally:
                console.close()
            _track(self)
            try:
                self._wait_ready(began + self._startup_timeout)
            except BaseException:
                self._kill()
                raise
            _log.info("RabbitMQ node %s ready in %.1f s", self.node_name, time.monotonic() - began)

    def _log_tail(self) -> str:
        if self._base_dir is None:
            return ""
        parts = []
        for name in ("rabbit.log", "console.log"):
            text = _tail(os.path.join(self._base_dir, "log", name))
            if text:
                parts.append(f"[{name}]\n{text}")
        return "\n".join(parts)

    def _wait_ready(self, deadline: float) -> None:
        ports = [self.amqp_port] + ([self._tls_port] if self._tls_port is not None else [])
        last_error = ""
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise BrokerStartError(
                    f"RabbitMQ node {self.node_name} exited with status {code} while starting",
                    log_tail=self._log_tail(),
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerStartError(
                    f"RabbitMQ node {self.node_name} not ready after "
                    f"{self._startup_timeout:g} s ({last_error or 'port closed'})",
                    log_tail=self._log_tail(),
                )
            if all(_tcp_accepts(_HOST, port, timeout=min(1.0, remaining)) for port in ports):
                try:
                    self.rabbitmqctl(
                        "await_startup",
                        "--timeout",
                        str(max(1, int(remaining))),
                        timeout=max(remaining, 1.0) + 5.0,
                    )
                    return
                except BrokerControlError as exc:
                    last_error = str(exc).splitlines()[0]
            time.sleep(0.1)

    def rabbitmqctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run ``rabbitmqctl -n <node_name> *args`` with this node's cookie.

        Args:
            *args: The command and its arguments, e.g. ``"list_queues", "name"``.
            timeout: Seconds to wait for the command.

        Returns:
            The command's standard output.

        Raises:
            BrokerControlError: It failed or timed out (with its stderr), or the
                node was never started.

        Example:
            >>> broker.rabbitmqctl("list_queues", "name", "messages")  # doctest: +SKIP
        """
        if self._env is None:
            raise BrokerControlError(f"{self!r} was never started")
        cmd = (os.path.join(_bin_dir(), "rabbitmqctl"), "-n", self.node_name, *args)
        try:
            done = subprocess.run(
                cmd,
                env=self._env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerControlError(
                f"rabbitmqctl {' '.join(args)} timed out after {timeout:g} s", command=cmd
            ) from exc
        except OSError as exc:
            raise BrokerControlError(f"cannot run rabbitmqctl: {exc}", command=cmd) from exc
        stdout = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            stderr = done.stderr.decode("utf-8", "replace") or stdout
            raise BrokerControlError(
                f"rabbitmqctl {' '.join(args)} exited {done.returncode}",
                command=cmd,
                returncode=done.returncode,
                stderr=stderr,
            )
        return stdout

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the node gracefully (``rabbitmqctl stop``), keeping its data and ports.

        Kills the node if it does not exit within ``timeout``. Does nothing if
        it is not running.

        Args:
            timeout: Seconds to wait for a graceful stop.
        """
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return
            _log.info("stopping RabbitMQ node %s", self.node_name)
            deadline = time.monotonic() + timeout
            try:
                self.rabbitmqctl("stop", timeout=timeout)
                proc.wait(max(0.1, deadline - time.monotonic()))
            except (BrokerControlError, subprocess.TimeoutExpired) as exc:
                _log.warning("graceful stop of %s failed (%s); killing it", self.node_name, exc)
                self._kill()

    def _kill(self, grace: float = 15.0) -> None:
        """SIGTERM the node's process group, then SIGKILL it after ``grace`` seconds."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # Signal the group while the leader is unreaped, so the pgid cannot be reused.
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc.poll() is None:
            _log.warning("RabbitMQ node %s (pid %d) survived SIGKILL", self.node_name, proc.pid)

    def close(self) -> None:
        """Kill the node and remove its temporary directory. Idempotent.

        A ``base_dir`` passed to the constructor is left in place.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._kill()
            finally:
                _untrack(self)
                if self._owns_base_dir and self._base_dir is not None:
                    shutil.rmtree(self._base_dir, ignore_errors=True)


# --------------------------------------------------------------------------- cluster


class LocalCluster:
    """Several :class:`LocalBroker` nodes on this machine joined into one cluster.

    All nodes share one Erlang cookie. :meth:`start` boots them in parallel and
    joins nodes 1.. to node 0 with ``stop_app`` / ``join_cluster`` / ``start_app``.
    Each node stays individually controllable (stop one, close connections on
    one). Call from one thread at a time.

    Args:
        size: Number of nodes (at least 1).
        base_dir: Parent directory for the nodes' directories (``node-0``, ...);
            default: one temporary directory per node, removed on close.
        extra_config: Lines appended to every node's ``rabbitmq.conf``.
        erlang_cookie: The shared cookie; default a random one.
        startup_timeout: Seconds each node may take to boot, and the cluster to form.

    Raises:
        ValueError: ``size`` is less than 1.

    Example:
        >>> with LocalCluster(3) as cluster:  # doctest: +SKIP
        ...     cluster.nodes[1].stop()
    """

    def __init__(
        self,
        size: int = 3,
        *,
        base_dir: str | None = None,
        extra_config: str = "",
        erlang_cookie: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        cookie = erlang_cookie or "".join(
            secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(32)
        )
        self._startup_timeout = startup_timeout
        self._closed = False
        self._started = False
        self.nodes: list[LocalBroker] = [
            LocalBroker(
                base_dir=None if base_dir is None else os.path.join(base_dir, f"node-{i}"),
                extra_config=extra_config,
                erlang_cookie=cookie,
                startup_timeout=startup_timeout,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """The AMQP URL of every node, in node order.

        Raises:
            BrokerError: The cluster never started.
        """
        return [node.url for node in self.nodes]

    @property
    def node_names(self) -> list[str]:
        """The Erlang node name of every node, in node order."""
        return [node.node_name for node in self.nodes]

    @staticmethod
    def _parallel(fn: Callable[[LocalBroker], None], nodes: Iterable[LocalBroker]) -> None:
        todo = list(nodes)
        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            futures = [pool.submit(fn, node) for node in todo]
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error

    def running_nodes(self) -> list[str]:
        """Return the running cluster members as node 0 (or the first answering node) sees them.

        Returns:
            Erlang node names.

        Raises:
            BrokerControlError: No node answered.
        """
        last: BrokerControlError | None = None
        for node in self.nodes:
            try:
                out = node.rabbitmqctl("cluster_status", "--formatter", "json")
            except BrokerControlError as exc:
                last = exc
                continue
            running = json.loads(out).get("running_nodes", [])
            return [str(name) for name in running]
        assert last is not None
        raise last

    def start(self) -> None:
        """Start every node and form the cluster; block until all nodes run in it.

        On a later call (after stopping nodes) only restarts the stopped nodes.

        Raises:
            BrokerStartError: A node did not boot, or the cluster did not form.
            BrokerControlError: A clustering command failed.
            BrokerError: The cluster was closed.
        """
        if self._closed:
            raise BrokerError("the cluster is closed")
        if self._started:
            self._parallel(LocalBroker.start, self.nodes)
            return
        began = time.monotonic()
        try:
            self._parallel(LocalBroker.start, self.nodes)
            seed = self.nodes[0].node_name
            for node in self.nodes[1:]:
                node.rabbitmqctl("stop_app")
                node.rabbitmqctl("join_cluster", seed, timeout=60.0)
                node.rabbitmqctl("start_app", timeout=self._startup_timeout)
            deadline = time.monotonic() + self._startup_timeout
            want = set(self.node_names)
            while True:
                running = set(self.running_nodes())
                if want <= running:
                    break
                if time.monotonic() > deadline:
                    raise BrokerStartError(
                        f"cluster did not form: running {sorted(running)}, want {sorted(want)}",
                        log_tail=self.nodes[0]._log_tail(),
                    )
                time.sleep(0.5)
        except BaseException:
            self.close()
            raise
        self._started = True
        _log.info(
            "RabbitMQ cluster of %d nodes formed in %.1f s",
            len(self.nodes),
            time.monotonic() - began,
        )

    def close(self) -> None:
        """Kill every node and remove their temporary directories. Idempotent."""
        self._closed = True
        self._parallel(LocalBroker.close, self.nodes)

    def __enter__(self: _C) -> _C:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- container


def _import_rabbitmq_container() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from testcontainers.community.rabbitmq import RabbitMqContainer
        except ImportError:
            from testcontainers.rabbitmq import RabbitMqContainer
    return RabbitMqContainer


def _unix_socket_ping(path: str, timeout: float) -> bool:
    """Send ``GET /_ping`` to a Docker engine's Unix socket; True on ``200 OK``."""
    if not os.path.exists(path):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"HTTP/") and b" 200 " in reply.split(b"\r\n", 1)[0]


def _docker_engine_answers(timeout: float = 3.0) -> bool:
    """Return whether testcontainers is installed and a Docker engine answers a ping."""
    if importlib.util.find_spec("testcontainers") is None:
        return False
    host = os.environ.get("DOCKER_HOST", "").strip() or "unix:///var/run/docker.sock"
    if host.startswith("unix://"):
        # Ping the socket ourselves: a docker client for a dead socket leaks an
        # unclosed socket (a ResourceWarning, an error under pytest's settings).
        return _unix_socket_ping(host[len("unix://") :], timeout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from testcontainers.core.docker_client import DockerClient

            def ping() -> bool:
                client = DockerClient(timeout=timeout)
                try:
                    return bool(client.client.ping())
                finally:
                    client.client.close()

            return _call_with_timeout(ping, timeout + 1.0, "docker ping")
    except Exception as exc:  # any failure means "no usable engine"
        _log.debug("no Docker engine at %s: %s", host, exc)
        return False


class ContainerBroker(Broker):
    """A RabbitMQ node in a Docker container, run with testcontainers.

    The AMQP port is published on a fixed free host port, so the URL survives
    :meth:`stop` / :meth:`start` (``docker stop`` / ``docker start``), which
    keep the container's data. ``rabbitmqctl`` runs inside the container.
    Call from one thread at a time.

    Args:
        image: The Docker image.
        startup_timeout: Seconds :meth:`start` waits (the first start may pull
            the image, which takes longer; it is bounded by testcontainers).

    Raises:
        ValueError: ``startup_timeout`` is not positive.
    """

    def __init__(self, *, image: str = _DEFAULT_IMAGE, startup_timeout: float = 120.0) -> None:
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be positive, got {startup_timeout}")
        self._image = image
        self._startup_timeout = startup_timeout
        self._container: Any = None
        self._host = _HOST
        self._port: int | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """``amqp://guest:guest@<docker host>:<published port>/%2F``.

        Raises:
            BrokerError: The container never started.
        """
        if self._port is None:
            raise BrokerError("the container has not been started")
        return f"amqp://guest:guest@{self._host}:{self._port}/%2F"

    def start(self) -> None:
        """Create and start the container, or start it again; wait until it serves AMQP.

        Raises:
            BrokerStartError: It did not become ready in time.
            BrokerError: The broker was closed.
        """
        if self._closed:
            raise BrokerError(f"{self!r} is closed")
        began = time.monotonic()
        if self._container is None:
            container_cls = _import_rabbitmq_container()
            host_port = _pick_port()
            container = container_cls(self._image, port=5672).with_bind_ports(5672, host_port)
            _log.info("starting RabbitMQ container %s on port %d", self._image, host_port)
            self._container = container
            _track(self)
            try:
                container.start()
                self._host = container.get_container_host_ip()
            except Exception as exc:
                raise BrokerStartError(f"RabbitMQ container did not start: {exc}") from exc
            self._port = host_port
        else:
            wrapped = self._container.get_wrapped_container()
            wrapped.reload()
            if wrapped.status != "running":
                wrapped.start()
        self._wait_ready(began + self._startup_timeout)
        _log.info("RabbitMQ container ready in %.1f s", time.monotonic() - began)

    def _wait_ready(self, deadline: float) -> None:
        last_error = ""
        while time.monotonic() < deadline:
            if self._port is not None and _tcp_accepts(self._host, self._port):
                try:
                    self.rabbitmqctl("await_startup", timeout=max(1.0, deadline - time.monotonic()))
                    return
                except BrokerControlError as exc:
                    last_error = str(exc).splitlines()[0]
            time.sleep(0.2)
        tail = ""
        try:
            tail = "\n".join(
                self._container.get_wrapped_container()
                .logs(tail=_LOG_TAIL_LINES)
                .decode("utf-8", "replace")
                .splitlines()
            )
        except Exception:
            _log.debug("cannot read container logs", exc_info=True)
        raise BrokerStartError(
            f"RabbitMQ container not ready after {self._startup_timeout:g} s ({last_error})",
            log_tail=tail,
        )

    def rabbitmqctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run ``rabbitmqctl *args`` inside the container.

        Args:
            *args: The command and its arguments.
            timeout: Seconds to wait for the command.

        Returns:
            The command's standard output.

        Raises:
            BrokerControlError: It failed or timed out, or the container never started.
        """
        if self._container is None:
            raise BrokerControlError(f"{self!r} was never started")
        cmd = ("rabbitmqctl", *args)
        wrapped = self._container.get_wrapped_container()

        def run() -> tuple[int, bytes, bytes]:
            code, (out, err) = wrapped.exec_run(list(cmd), demux=True)
            return int(code), out or b"", err or b""

        code, out, err = _call_with_timeout(run, timeout, "rabbitmqctl")
        stdout = out.decode("utf-8", "replace")
        if code != 0:
            raise BrokerControlError(
                f"rabbitmqctl {' '.join(args)} exited {code}",
                command=cmd,
                returncode=code,
                stderr=err.decode("utf-8", "replace") or stdout,
            )
        return stdout

    def stop(self) -> None:
        """Stop the container (``docker stop``), keeping its data. Does nothing if stopped."""
        if self._container is None:
            return
        _log.info("stopping RabbitMQ container")
        self._container.get_wrapped_container().stop(timeout=30)

    def close(self) -> None:
        """Remove the container. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _untrack(self)
        if self._container is not None:
            try:
                self._container.stop()
            except Exception:
                _log.warning("could not remove the RabbitMQ container", exc_info=True)


# --------------------------------------------------------------------------- acquire


def acquire_broker() -> Broker:
    """Return a started broker for tests, the best this machine offers.

    Order: ``HUTCH_TEST_AMQP_URL`` (an :class:`ExternalBroker`, checked to accept
    TCP connections); a Docker engine (:class:`ContainerBroker`); a local
    ``rabbitmq-server`` node (:class:`LocalBroker`), installed with ``apt-get``
    when missing and possible; also when the container fails to start (logged
    as a warning). ``HUTCH_TEST_BROKER=docker`` or ``local`` allows only that
    kind. The caller owns the broker and must :meth:`~Broker.close` it.

    Returns:
        A broker that accepts AMQP connections at :attr:`~Broker.url`.

    Raises:
        BrokerUnavailable: No broker can be had; the message says how to get one.
        BrokerStartError: A broker was found but did not start.
        ValueError: ``HUTCH_TEST_AMQP_URL`` or ``HUTCH_TEST_BROKER`` is malformed.

    Example:
        >>> with acquire_broker() as broker:  # doctest: +SKIP
        ...     print(broker.url)
    """
    url = os.environ.get(URL_ENV, "").strip()
    if url:
        external = ExternalBroker(url)
        parts = urlsplit(url)
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        if not _tcp_accepts(parts.hostname or "localhost", port, timeout=5.0):
            raise BrokerUnavailable(f"{URL_ENV}={_redact(url)} does not accept TCP connections")
        _log.info("using the external broker %s", _redact(url))
        return external

    kind = os.environ.get(KIND_ENV, "auto").strip().lower() or "auto"
    if kind not in ("auto", "docker", "local"):
        raise ValueError(f"{KIND_ENV} must be auto, docker or local, got {kind!r}")

    if kind in ("auto", "docker"):
        if _docker_engine_answers():
            container = ContainerBroker()
            try:
                container.start()
            except BrokerError as exc:
                container.close()
                if kind == "docker" or not (_local_server_installed() or _can_install()):
                    raise
                _log.warning("RabbitMQ container failed (%s); using a local node instead", exc)
            except BaseException:
                container.close()
                raise
            else:
                return container
        if kind == "docker":
            raise BrokerUnavailable(
                f"{KIND_ENV}=docker but no Docker engine answers (or testcontainers is "
                f"not installed). {_HOW_TO_GET_A_BROKER}"
            )

    if not _local_server_installed() and not _can_install():
        raise BrokerUnavailable(f"no RabbitMQ broker available. {_HOW_TO_GET_A_BROKER}")
    local = LocalBroker()
    try:
        local.start()
    except BaseException:
        local.close()
        raise
    return local
