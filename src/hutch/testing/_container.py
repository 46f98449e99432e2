"""A RabbitMQ node in a Docker container, through testcontainers."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import time
import warnings
from typing import Any

from hutch.testing._base import Broker, track, untrack
from hutch.testing._errors import BrokerControlError, BrokerError, BrokerStartError
from hutch.testing._util import (
    HOST,
    LOG_TAIL_LINES,
    call_with_timeout,
    pick_port,
    tcp_accepts,
)

__all__ = ["DEFAULT_IMAGE", "ContainerBroker", "docker_engine_answers"]

_log = logging.getLogger("hutch.testing")

DEFAULT_IMAGE = "rabbitmq:3.13"


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


def docker_engine_answers(timeout: float = 3.0) -> bool:
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

            return call_with_timeout(ping, timeout + 1.0, "docker ping")
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

    def __init__(self, *, image: str = DEFAULT_IMAGE, startup_timeout: float = 120.0) -> None:
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be positive, got {startup_timeout}")
        self._image = image
        self._startup_timeout = startup_timeout
        self._container: Any = None
        self._host = HOST
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
            host_port = pick_port()
            container = container_cls(self._image, port=5672).with_bind_ports(5672, host_port)
            _log.info("starting RabbitMQ container %s on port %d", self._image, host_port)
            self._container = container
            track(self)
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
            if self._port is not None and tcp_accepts(self._host, self._port):
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
                .logs(tail=LOG_TAIL_LINES)
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

        code, out, err = call_with_timeout(run, timeout, "rabbitmqctl")
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
        untrack(self)
        if self._container is not None:
            try:
                self._container.stop()
            except Exception:
                _log.warning("could not remove the RabbitMQ container", exc_info=True)
