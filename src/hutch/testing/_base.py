"""The :class:`Broker` interface every test broker implements, and the at-exit teardown."""

from __future__ import annotations

import abc
import atexit
import csv
import io
import json
import logging
import threading
from types import TracebackType
from typing import TypeVar

from hutch.testing._errors import BrokerControlError, BrokerError
from hutch.testing._util import redact

__all__ = ["Broker", "track", "untrack"]

_log = logging.getLogger("hutch.testing")

_B = TypeVar("_B", bound="Broker")


def _connection_name(client_properties: object) -> str | None:
    # rabbitmqctl's JSON formatter renders an AMQP table as [[key, type, value], ...].
    if not isinstance(client_properties, list):
        return None
    for entry in client_properties:
        if isinstance(entry, list) and len(entry) == 3 and entry[0] == "connection_name":
            value = entry[2]
            return value if isinstance(value, str) else str(value)
    return None


def _erlang_binary(text: str) -> str:
    return "<<" + ",".join(str(b) for b in text.encode()) + ">>"


def close_connections_erlang(name_contains: str | None, reason: str) -> str:
    """The Erlang expression that closes the matching client connections and counts them.

    Strings go in as UTF-8 byte lists, so no text needs escaping. A connection matches
    when its client-provided ``connection_name`` contains ``name_contains`` (any
    connection when that is None), as :meth:`Broker.close_connections` documents.
    """
    match_all = "true" if name_contains is None else "false"
    sub = _erlang_binary(name_contains or "")
    return (
        f"All = {match_all}, Sub = {sub}, "
        f"Why = unicode:characters_to_list({_erlang_binary(reason)}), "
        "Name = fun(P) -> "
        "case catch rabbit_networking:connection_info(P, [client_properties]) of "
        "[{client_properties, Props}] when is_list(Props) -> "
        'case lists:keyfind(<<"connection_name">>, 1, Props) of '
        "{_, longstr, V} when is_binary(V) -> V; _ -> none end; "
        "_ -> none end end, "
        "Hit = fun(none) -> false; "
        "(V) -> Sub =:= <<>> orelse binary:match(V, Sub) =/= nomatch end, "
        "Ps = [P || P <- rabbit_networking:connections(), All orelse Hit(Name(P))], "
        "length([P || P <- Ps, (catch rabbit_networking:close_connection(P, Why)) =:= ok])."
    )


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
        closed = self._close_connections_at_once(name_contains, reason)
        if closed is not None:
            _log.info("closed %d broker connection(s) matching %r", closed, name_contains)
            return closed
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

    def _close_connections_at_once(self, name_contains: str | None, reason: str) -> int | None:
        """Select and close in one ``rabbitmqctl eval``; None if the broker refused it.

        One command instead of three or more (each starts an Erlang VM, half a second
        to a second); a broker that does not allow ``eval`` gets the listed way.
        """
        try:
            out = self.rabbitmqctl("eval", close_connections_erlang(name_contains, reason))
        except BrokerControlError as exc:
            _log.debug("rabbitmqctl eval refused, closing one by one: %s", exc)
            return None
        text = out.strip()
        return int(text) if text.isdigit() else None

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
            where = redact(self.url)
        except BrokerError:
            where = "not started"
        return f"<{type(self).__name__} {where}>"


# Brokers that own a process or container, torn down at interpreter exit at the latest.
_live: set[Broker] = set()
_live_lock = threading.Lock()


def track(broker: Broker) -> None:
    with _live_lock:
        _live.add(broker)


def untrack(broker: Broker) -> None:
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
