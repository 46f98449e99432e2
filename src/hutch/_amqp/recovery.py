"""Connecting, losing the connection, recovering it (with backoff) and shutting down."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pika
import pika.channel
import pika.exceptions as pex
import pika.spec
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from hutch._amqp.errors import CONNECTION_ERRORS, is_lost_socket, map_pika_error, root_cause
from hutch._amqp.ownership import Ownership
from hutch._amqp.watch import Watch
from hutch._exceptions import (
    AuthenticationError,
    ClosedError,
    ConnectError,
    ConnectionLost,
    HutchError,
    OperationTimeout,
)
from hutch._settings import Address, RecoveryPolicy

__all__ = ["Recovering"]

log = logging.getLogger("hutch")


class Recovering(Ownership):
    """Connects, recovers and shuts down (runs on the I/O thread, holding the connection)."""

    def _connect_once(self, deadline: float | None = None) -> pika.BlockingConnection:
        s = self.settings
        errors: list[str] = []
        n = len(s.addresses)
        for i in range(n):
            idx = (self._address_index + i) % n
            address = s.addresses[idx]
            limit = None if deadline is None else deadline - time.monotonic()
            if limit is not None and limit <= 0:
                break
            params = self._parameters(address, limit)
            try:
                conn = pika.BlockingConnection(params)
            except (
                pex.ProbableAuthenticationError,
                pex.AuthenticationError,
                pex.ProbableAccessDeniedError,
            ) as exc:
                raise map_pika_error(exc) from exc
            except pex.ConnectionClosedByBroker as exc:
                if exc.reply_code in (403, 530):
                    raise map_pika_error(exc) from exc
                errors.append(f"{address}: {exc.reply_code} {exc.reply_text}")
                continue
            except (pex.AMQPError, OSError, AMQPConnectorException, ValueError) as exc:
                # AMQPConnectorStackTimeout (the handshake ran out of time) is no AMQPError
                # (a ValueError only when pika lost the socket: ssl's certificate errors are
                # ValueErrors and OSErrors at once)
                expected = isinstance(exc, (pex.AMQPError, OSError, AMQPConnectorException))
                if not expected and not is_lost_socket(exc):
                    raise
                detail = root_cause(exc)
                if "CERTIFICATE_VERIFY_FAILED" in detail:
                    detail += (
                        " (the broker's TLS certificate is not trusted: give the CA that "
                        "signed it as TlsOptions(ca_file=...), and connect by a name the "
                        "certificate holds or set server_hostname)"
                    )
                errors.append(f"{address}: {detail}")
                continue
            self._address_index = idx
            self.connected_address = address
            conn.add_on_connection_blocked_callback(self._on_blocked)
            conn.add_on_connection_unblocked_callback(self._on_unblocked)
            self._unblocked.set()
            log.info("hutch: connected to %s as %r", s.url_for(address), self.name)
            if s.tls is not None and s.tls.insecure_skip_verify:
                log.warning(
                    "hutch: INSECURE: TLS certificate and host name verification is disabled "
                    "(insecure_skip_verify=True) on %r; anyone on the path can impersonate the "
                    "broker and read the credentials",
                    self.name,
                )
            return conn
        # next time, start with the node after the one that failed first
        self._address_index = (self._address_index + 1) % n
        if deadline is not None and time.monotonic() >= deadline:
            raise OperationTimeout(
                f"connecting took longer than {self._open_timeout} s"
                + (": " + "; ".join(errors) if errors else "")
            )
        raise ConnectError(
            "cannot connect to the broker: " + "; ".join(errors),
            host=",".join(str(a) for a in s.addresses),
        )

    def _parameters(self, address: Address, limit: float | None) -> pika.ConnectionParameters:
        """The parameters for ``address``; ``limit``: seconds the attempt may take at most."""
        s = self.settings
        socket_timeout, stack_timeout = s.connect_timeout, s.connect_timeout * 2
        if limit is not None:
            socket_timeout = max(0.001, min(socket_timeout, limit))
            stack_timeout = max(0.001, min(stack_timeout, limit))
        ssl_options = None
        if s.tls is not None:
            ssl_options = pika.SSLOptions(
                s.tls.ssl_context(), server_hostname=s.tls.server_hostname or address.host
            )
        return pika.ConnectionParameters(
            host=address.host,
            port=address.port,
            virtual_host=s.vhost,
            credentials=pika.PlainCredentials(s.username, s.password.get_secret_value()),
            heartbeat=s.heartbeat,
            blocked_connection_timeout=s.blocked_connection_timeout,
            socket_timeout=socket_timeout,
            stack_timeout=stack_timeout,
            connection_attempts=1,
            ssl_options=ssl_options,
            client_properties={"connection_name": self.name, "product": "hutch"},
        )

    def _on_blocked(self, _conn: Any, _frame: Any) -> None:
        log.warning("hutch: broker blocked publishing on %r (resource alarm)", self.name)
        self._blocked_at = time.monotonic()
        self._unblocked.clear()

    def _on_unblocked(self, _conn: Any, _frame: Any) -> None:
        log.info("hutch: broker unblocked publishing on %r", self.name)
        self._unblocked.set()

    def _notify(self, event: str, error: BaseException | None) -> None:
        if self._owner != threading.get_ident():
            with self._owning():
                self._notify(event, error)
            return
        for listener in list(self._listeners):
            try:
                listener(event, error)
            except Exception:
                log.exception("hutch: connection listener failed")

    def _set_pika(self, conn: pika.BlockingConnection | None) -> None:
        # holding _own
        self._pika = conn
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if conn is not None and self._wake_r is not None:
            self._watch = Watch(conn, self._wake_r.fileno())

    def _recover(self, exc: BaseException) -> None:
        error = map_pika_error(exc)
        log.warning("hutch: connection %r lost: %s", self.name, root_cause(exc))
        with self._owning():
            self._broken = None
            self._set_pika(None)
            with self._lock:
                self._down_since = time.monotonic()
            with self._lock:
                channels = list(self._channels)
            for ch in channels:
                ch.on_connection_lost()
        self._notify("lost", error)
        policy: RecoveryPolicy = self.settings.recovery
        if isinstance(error, AuthenticationError) or not policy.enabled:
            self._fail(error)
            return
        started = time.monotonic()
        attempt = 0
        for delay in policy.delays():
            attempt += 1
            self._wake.clear()
            if self._closing or self._wake_wait_closing(delay):
                return
            with self._owning():
                try:
                    conn = self._connect_once()
                except AuthenticationError as auth:
                    self._fail(auth)
                    return
                except ConnectError as again:
                    log.info(
                        "hutch: reconnect attempt %d of %r failed: %s", attempt, self.name, again
                    )
                    continue
                self._set_pika(conn)
                try:
                    with self._lock:
                        channels = list(self._channels)
                    for ch in channels:
                        ch.restore()
                except CONNECTION_ERRORS as lost:
                    log.info("hutch: connection %r lost again while restoring: %s", self.name, lost)
                    self._set_pika(None)
                    for ch in channels:
                        ch.on_connection_lost()
                    continue
                self._broken = None
                self.recoveries += 1
                with self._lock:
                    if self._down_since is not None:
                        self._downtime += time.monotonic() - self._down_since
                    self._down_since = None
            log.warning(
                "hutch: connection %r restored to %s after %.2f s (%d attempts)",
                self.name,
                self.connected_address,
                time.monotonic() - started,
                attempt,
            )
            with self._lock:
                self._wake_pending = False
            self._notify("restored", None)
            return
        self._fail(
            ConnectionLost(
                f"connection {self.name!r} lost and not recovered after {attempt} attempts: {error}"
            )
        )

    def _wake_wait_closing(self, delay: float) -> bool:
        deadline = time.monotonic() + delay
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing:
                return self._closing
            self._wake.wait(remaining)
            self._wake.clear()

    def _fail(self, error: HutchError) -> None:
        with self._lock:
            self._down_since = None
        if self._failure is None:
            self._failure = error
            log.error("hutch: connection %r failed: %s", self.name, error)
            self._notify("failed", error)
        self._closing = True

    def _shutdown(self) -> None:
        with self._owning():
            self._shutdown_owned()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def _shutdown_owned(self) -> None:
        self._closing = True
        with self._lock:
            channels = list(self._channels)
        reason = self._failure or ClosedError("the connection was closed")
        conn = self._pika
        self._set_pika(None)
        for ch in channels:
            try:
                ch.on_connection_closed(reason, graceful=conn is not None and self._failure is None)
            except (pex.AMQPError, OSError, HutchError):
                pass
        if conn is not None:
            try:
                if conn.is_open:
                    conn.close()
            except (pex.AMQPError, OSError) as exc:
                log.debug("hutch: error while closing %r: %s", self.name, exc)
        # run what is still queued: each task sees the closed state and fails its future
        with self._lock:
            tasks = list(self._tasks)
            self._tasks.clear()
        for task in tasks:
            try:
                task()
            except Exception:
                log.debug("hutch: task failed during shutdown", exc_info=True)
        if not self._opened.done():
            self._opened.set_exception(reason)
        self._unblocked.set()
        if self._failure is None:
            # closed by close(), from any thread or a handler (a failure was told as
            # "failed"): whoever serves on it stops instead of waiting for ever
            self._notify("closed", reason)
        self._closed.set()
        log.info("hutch: connection %r closed", self.name)
