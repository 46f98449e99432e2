"""The connection: hutch's public facade over the AMQP layer.

The connection's I/O (pika, its thread rules, recovery) lives in :mod:`hutch._amqp`;
this module is the public facade and imports no pika.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from hutch._amqp import Channel, ChannelApi, Driver
from hutch._checks import check_timeout
from hutch._clock import REAL_CLOCK, Clock
from hutch._exceptions import ClosedError
from hutch._memory.adapter import MemoryAmqpChannel, MemoryDriver
from hutch._resource import Resource
from hutch._settings import ConnectionSettings
from hutch._telemetry import Telemetry, create_telemetry

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Connection", "connect"]

log = logging.getLogger("hutch")

_names = itertools.count(1)


class Connection(Resource):
    """A connection to RabbitMQ, owned by one background I/O thread.

    Constructing it validates the settings and does no I/O; :meth:`open` (or ``with``)
    connects. Any thread may use a connection and the publishers, subscribers and pools
    built on it: they hand their work to the I/O thread, which keeps heartbeats flowing
    however long user code runs. The connection recovers by itself after it is lost (see
    :class:`~hutch.RecoveryPolicy`).

    Args:
        url: ``amqp://user:pass@host:port/vhost`` (``amqps://`` for TLS), or a list of URLs of
            cluster nodes to fail over between. Defaults to the ``HUTCH_URL`` environment
            variable, else ``amqp://guest:guest@localhost:5672/``.
        settings: Ready-made settings instead of a URL (the environment is not read).
        **options: Any :class:`~hutch.ConnectionSettings` field, overriding the URL's
            (``heartbeat``, ``connection_name``, ``tls``, ``recovery``...). Fields neither
            given nor in the URL come from ``HUTCH_<FIELD>`` variables (``HUTCH_HEARTBEAT``,
            ``HUTCH_VHOST``...; see :meth:`~hutch.ConnectionSettings.from_environment`).

    Raises:
        ValueError: A malformed URL or an invalid option.
        TypeError: Both ``url`` and ``settings`` given.

    Example:
        >>> with hutch.Connection("amqp://guest:guest@localhost/") as conn:  # doctest: +SKIP
        ...     hutch.Publisher(conn, exchange="logs").publish("hello")
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        settings: ConnectionSettings | None = None,
        **options: Any,
    ) -> None:
        if settings is not None:
            if url is not None or options:
                raise TypeError("pass either settings or a URL with options, not both")
            self.settings = settings
        else:
            self.settings = ConnectionSettings.from_environment(url, **options)
        self.name = self.settings.connection_name or f"hutch-{next(_names)}"
        # memory:// (tests only): the in-process broker serves the same channel API
        self._io: Driver | MemoryDriver = (
            Driver(self.settings, self.name)
            if self.settings.memory is None
            else MemoryDriver(self.settings, self.name)
        )
        #: The connection's telemetry (internal): OpenTelemetry spans and metrics for every
        #: pattern on it, or the no-op one (``tracing=False``, or no opentelemetry-api).
        self.telemetry: Telemetry = create_telemetry(
            self.settings.tracing, connection_name=self.name
        )

    def __repr__(self) -> str:
        state = "open" if self.is_open else ("failed" if self._io.failure else "closed")
        address = self._io.connected_address or self.settings.addresses[0]
        return f"<Connection {self.name!r} {self.settings.url_for(address)} {state}>"

    @property
    def is_open(self) -> bool:
        """True once opened and until closed or failed for good."""
        return self._io.is_open

    @property
    def is_connected(self) -> bool:
        """True while connected to the broker: open and not recovering a lost connection.

        Unlike :attr:`is_open`, which stays True while a lost connection is being
        recovered, this is False from the loss until the connection is restored, and
        once it is closed or failed for good: what a health check wants. Any thread.
        """
        io = self._io
        return io.is_open and not io.recovering

    @property
    def blocked(self) -> bool:
        """True while the broker blocks publishing (memory or disk alarm)."""
        return self._io.blocked

    @property
    def recoveries(self) -> int:
        """How many times this connection has been recovered after a loss."""
        return self._io.recoveries

    def open(self, timeout: float | None = 30.0) -> Self:
        """Connect (trying each address in turn) and start the I/O thread.

        Args:
            timeout: Seconds to wait for the connection.

        Returns:
            This connection, for chaining.

        Raises:
            AuthenticationError: The broker refused the credentials.
            ConnectError: No address could be reached.
            ClosedError: The connection was closed before.
            ValueError: ``timeout`` is not a finite number of seconds greater than 0.
        """
        timeout = check_timeout("timeout", timeout, allow_none=True)
        if self._io._closing:
            raise ClosedError("the connection is closed; create a new one")
        if self.telemetry.enabled:  # counts losses and recoveries; removed by close()
            self._io.remove_listener(self.telemetry.on_connection_event)  # once, if reopened
            self._io.add_listener(self.telemetry.on_connection_event)
        self._io.start(timeout)
        return self

    def close(self, timeout: float | None = 10.0) -> None:
        """Close the connection and everything on it. Idempotent.

        Args:
            timeout: Seconds to wait for the I/O thread to finish.
        """
        self._io.close(check_timeout("timeout", timeout, allow_none=True))
        if self.telemetry.enabled:
            self._io.remove_listener(self.telemetry.on_connection_event)

    def add_listener(self, listener: Callable[[str, BaseException | None], None]) -> None:
        """Be told when the connection is "lost", "restored", has "failed" or is "closed".

        ``"closed"`` (with a :class:`~hutch.ClosedError`) comes when :meth:`close` ended
        the connection, from any thread; a connection that failed for good is told
        ``"failed"`` instead. Either is the last event. The listener runs on the I/O thread
        and must return quickly; remove it with :meth:`remove_listener`.

        Args:
            listener: Called as ``listener(event, error)``.
        """
        self._io.add_listener(listener)

    def remove_listener(self, listener: Callable[[str, BaseException | None], None]) -> None:
        """Stop telling ``listener`` about events (no error if it was not added).

        Args:
            listener: A listener given to :meth:`add_listener`.
        """
        self._io.remove_listener(listener)

    def channel(self, *, confirms: bool = False) -> ChannelApi:
        """Open a low-level channel (used by publishers, subscribers and pools).

        Args:
            confirms: Put the channel in publisher-confirm mode.

        Returns:
            The channel.
        """
        io = self._io
        if isinstance(io, MemoryDriver):
            # same methods, same Delivery objects and exceptions as Channel: both serve
            # ChannelApi, the protocol the patterns are typed against
            memory = MemoryAmqpChannel(io, confirms=confirms)
            memory.open()
            return memory
        ch = Channel(io, confirms=confirms)
        ch.open()
        return ch

    @property
    def clock(self) -> Clock:
        """The time that hutch's waits on this connection read.

        ``time.monotonic()`` on RabbitMQ; on ``memory://NAME?clock=virtual`` the memory
        broker's virtual time, which jumps to the next deadline whenever every thread that
        uses the broker waits for one. A test that measures how long something took on
        either broker reads ``conn.clock.now()`` instead of ``time.monotonic()``.
        """
        io = self._io
        return io.clock if isinstance(io, MemoryDriver) else REAL_CLOCK

    @property
    def io(self) -> Driver:
        """The I/O loop (internal; a memory:// connection's is a ``MemoryDriver``)."""
        return cast(Driver, self._io)


def connect(url: str | Sequence[str] | None = None, **options: Any) -> Connection:
    """Open a connection: ``Connection(url, **options).open()``.

    Settings come from, in this order: ``options``, the URL, ``HUTCH_*`` environment
    variables, the defaults (see :meth:`~hutch.ConnectionSettings.from_environment`).

    Args:
        url: An ``amqp://`` or ``amqps://`` URL, or several for a cluster; by default the
            ``HUTCH_URL`` environment variable, else ``amqp://guest:guest@localhost:5672/``.
        **options: Settings overriding the URL's (see :class:`~hutch.ConnectionSettings`).

    Returns:
        The open connection; close it, or use it in a ``with`` block.

    Raises:
        AuthenticationError: The broker refused the credentials.
        ConnectError: No address could be reached.

    Example:
        >>> with hutch.connect("amqp://guest:guest@localhost/") as conn:  # doctest: +SKIP
        ...     ...
    """
    timeout = check_timeout("open_timeout", options.pop("open_timeout", 30.0), allow_none=True)
    return Connection(url, **options).open(timeout)


def resolve_connection(connection: Connection | str | None) -> tuple[Connection, bool]:
    """Accept a connection or a URL; return the connection and whether we own it.

    Args:
        connection: A :class:`Connection` (shared, not closed by the caller's close), a URL,
            or None for ``HUTCH_URL`` (see :meth:`~hutch.ConnectionSettings.from_environment`).

    Returns:
        The connection and True if it was created here (then it is opened lazily by the owner).

    Raises:
        TypeError: Neither a Connection nor a URL string.
    """
    if isinstance(connection, Connection):
        return connection, False
    if connection is None or isinstance(connection, str):
        return Connection(connection), True
    raise TypeError(
        f"expected a hutch.Connection or an amqp:// URL, got {type(connection).__name__}"
    )
