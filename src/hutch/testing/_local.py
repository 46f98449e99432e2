"""A private RabbitMQ node on this machine: free ports, one temporary directory, killable.

A :class:`LocalBroker` runs ``rabbitmq-server`` directly (not the Debian wrapper that
switches to the ``rabbitmq`` user) with every path (data, logs, config, enabled plugins, pid
file, Erlang cookie in a private ``HOME``) inside one temporary directory, on free ports
chosen outside the kernel's ephemeral range so that a client's outgoing connection cannot
take the port while the node is stopped. The shared ``epmd`` daemon that Erlang starts is
left running.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import TypeVar

from hutch.testing._base import Broker, track, untrack
from hutch.testing._errors import BrokerControlError, BrokerError, BrokerStartError
from hutch.testing._install import bin_dir, ensure_local_server
from hutch.testing._util import HOST, pick_port, tail, tcp_accepts

__all__ = ["LocalBroker", "TlsFiles"]

_log = logging.getLogger("hutch.testing")

_L = TypeVar("_L", bound="LocalBroker")


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
        return f"amqp://guest:guest@{HOST}:{self.amqp_port}/%2F"

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
        ensure_local_server()
        if self._base_dir is None:
            self._base_dir = tempfile.mkdtemp(prefix="hutch-rabbitmq-")
        base = self._base_dir
        home = os.path.join(base, "home")
        for sub in ("home", "mnesia", "log"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        if self._amqp_port is None:
            self._amqp_port = pick_port()
        if self._dist_port is None:
            self._dist_port = pick_port()
        if self._tls is not None and self._tls_port is None:
            self._tls_port = pick_port()

        cookie_path = os.path.join(home, ".erlang.cookie")
        if os.path.exists(cookie_path):
            os.chmod(cookie_path, 0o600)
        with open(cookie_path, "w", encoding="ascii") as fh:
            fh.write(self._cookie)
        os.chmod(cookie_path, 0o400)

        conf = [
            "loopback_users = none",
            f"listeners.tcp.default = {HOST}:{self._amqp_port}",
            "log.console = false",
            "log.file.level = info",
        ]
        if self._tls is not None:
            conf += [
                f"listeners.ssl.default = {HOST}:{self._tls_port}",
                f"ssl_options.cacertfile = {self._tls.ca_cert}",
                f"ssl_options.certfile = {self._tls.server_cert}",
                f"ssl_options.keyfile = {self._tls.server_key}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        with open(os.path.join(base, "rabbitmq.conf"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(conf) + "\n" + self._extra_config + "\n")
        with open(os.path.join(base, "enabled_plugins"), "w", encoding="ascii") as fh:
            # shipped with the server; hutch's partitioned work queues route through it
            fh.write("[rabbitmq_consistent_hash_exchange].\n")
        # An empty env file so /etc/rabbitmq/rabbitmq-env.conf is not read.
        open(os.path.join(base, "rabbitmq-env.conf"), "w").close()

        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        if not env.get("LC_ALL") and not env.get("LANG"):
            env["LANG"] = "C.UTF-8"  # the Elixir CLI complains under a latin1 locale
        env.update(
            HOME=home,
            RABBITMQ_NODENAME=self.node_name,
            RABBITMQ_NODE_IP_ADDRESS=HOST,
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
                    [os.path.join(bin_dir(), "rabbitmq-server")],
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
            track(self)
            try:
                self._wait_ready(began + self._startup_timeout)
            except BaseException:
                self._kill()
                raise
            _log.info(
                "RabbitMQ node %s ready in %.1f s",
                self.node_name,
                time.monotonic() - began,
            )

    def _log_tail(self) -> str:
        if self._base_dir is None:
            return ""
        parts = []
        for name in ("rabbit.log", "console.log"):
            text = tail(os.path.join(self._base_dir, "log", name))
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
            if all(tcp_accepts(HOST, port, timeout=min(1.0, remaining)) for port in ports):
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
        cmd = (os.path.join(bin_dir(), "rabbitmqctl"), "-n", self.node_name, *args)
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
                f"rabbitmqctl {' '.join(args)} timed out after {timeout:g} s",
                command=cmd,
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
                untrack(self)
                if self._owns_base_dir and self._base_dir is not None:
                    shutil.rmtree(self._base_dir, ignore_errors=True)
