"""Publisher[T]: typed, confirmed, persistent publishing."""

from __future__ import annotations

import datetime as _dt
import os
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from hutch._amqp import (
    Batch,
    ChannelApi,
    OutgoingMessage,
    basic_properties,
    to_pika_properties,
)
from hutch._checks import (
    check_basic_properties,
    check_bool,
    check_field_table,
    check_int,
    check_shortstr,
    check_timeout,
)
from hutch._confirm_batch import (
    BatchResult,
    ConfirmBatch,
    _count_batch,
    _count_outcome,
    _inject,
    _publish_span,
)
from hutch._connection import Connection, resolve_connection
from hutch._delay import DelayQueues, check_publish_delay
from hutch._exceptions import (
    ConnectionBlocked,
    MessageTooLarge,
    OperationTimeout,
    PublishError,
    Unroutable,
)
from hutch._lifecycle import Lifecycle, LifecycleState
from hutch._message import PERSISTENT, PROPERTY_NAMES, TRANSIENT, Properties
from hutch._resource import Resource
from hutch._serialization import Codec, codec_for, encode_any
from hutch._telemetry import PublishOutcome
from hutch._topology import Exchange, Queue, TopologyItem

if TYPE_CHECKING:
    from typing_extensions import Self

    from hutch._topology import FieldValue

__all__ = ["BatchResult", "ConfirmBatch", "Publisher"]

T = TypeVar("T")

_MAX_UNCONFIRMED_WRITES = 2000

#: Draws the random message ids. Not ``os.urandom``: that releases the GIL for a system
#: call, and getting it back behind a busy I/O or callback thread cost 6-12 us a
#: publish. A message id needs uniqueness, not secrecy; a forked child reseeds (from
#: ``os.urandom``) so that it never repeats its parent's ids.
_IDS = random.Random()
if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_IDS.seed)


def _message_id() -> str:
    """A new random message id: 32 hex digits, as ``os.urandom(16).hex()`` gave."""
    return f"{_IDS.getrandbits(128):032x}"


# longest a publishing thread does its own I/O while waiting for a confirm; then the I/O
# thread takes over (slow confirms are rare, and other threads may need the connection)
_PUMP_LIMIT = 0.5


def _check_properties(properties: Mapping[str, Any]) -> None:
    unknown = set(properties) - PROPERTY_NAMES
    if unknown:
        raise TypeError(
            f"unknown message properties {sorted(unknown)}; the AMQP basic properties are "
            + ", ".join(sorted(PROPERTY_NAMES))
        )


def _expiration_as_str(properties: Mapping[str, Any]) -> Mapping[str, Any]:
    """``expiration`` given as a timedelta becomes AMQP's string of milliseconds."""
    expiration = properties.get("expiration")
    if isinstance(expiration, _dt.timedelta):
        try:
            millis = str(max(0, round(expiration.total_seconds() * 1000)))
        except OverflowError:  # (cannot happen for a timedelta; kept for clarity)
            raise ValueError("expiration is too long") from None
        return {**properties, "expiration": millis}
    return properties


class Publisher(Resource, Generic[T]):
    """Publishes bodies of type ``T`` to one exchange.

    Messages are persistent (``delivery_mode=2``) and confirmed by default: :meth:`publish`
    returns once the broker has taken responsibility for the message, and raises
    otherwise. A message id is generated when none is given.

    Any thread may call :meth:`publish`; calls from many threads are pipelined over one
    channel. Publishing never blocks heartbeats: the connection's I/O thread does the
    network work. The exchange is declared when the publisher opens if it is given as an
    :class:`~hutch.Exchange` (a plain name is assumed to exist).

    Delivery is at-least-once: if the connection is lost before the broker confirmed a
    message, :meth:`publish` keeps waiting while the connection recovers and the message is
    republished with the same ``message_id``; it raises only when the recovery policy gives
    up. A message republished this way may reach consumers twice, so consumers that must not
    act twice deduplicate by ``message_id`` (see ``docs/reliability.md``).

    Args:
        connection: A :class:`~hutch.Connection` (shared) or a URL (owned: opened and closed
            with the publisher); None (the default) is ``HUTCH_URL``'s broker.
        exchange: Target exchange: an :class:`~hutch.Exchange` to declare, or a name;
            ``""`` (the default exchange) routes by queue name.
        routing_key: Default routing key.
        model: The body type; None accepts bytes, str, pydantic models and JSON values.
        confirm: Wait for publisher confirms (default True).
        persistent: Mark messages persistent (default True).
        mandatory: Make unroutable messages raise :class:`~hutch.Unroutable` (needs confirm).
        declare: More topology to declare on open (queues, bindings).
        timeout: Default seconds to wait for a confirm.
        app_id: Default ``app_id`` property.

    Raises:
        TypeError: A wrong argument type.
        ValueError: An invalid argument value.

    Example:
        >>> orders = Exchange("orders", "topic")
        >>> with Publisher(conn, exchange=orders, model=Order) as pub:  # doctest: +SKIP
        ...     pub.publish(Order(id=1), routing_key="order.created")
    """

    @overload
    def __init__(
        self: Publisher[object],
        connection: Connection | str | None = None,
        *,
        exchange: Exchange | str = "",
        routing_key: str = "",
        model: None = None,
        confirm: bool = True,
        persistent: bool = True,
        mandatory: bool = False,
        declare: Iterable[TopologyItem] = (),
        timeout: float = 30.0,
        app_id: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        exchange: Exchange | str = "",
        routing_key: str = "",
        model: type[T],
        confirm: bool = True,
        persistent: bool = True,
        mandatory: bool = False,
        declare: Iterable[TopologyItem] = (),
        timeout: float = 30.0,
        app_id: str | None = None,
    ) -> None: ...

    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        exchange: Exchange | str = "",
        routing_key: str = "",
        model: type[T] | None = None,
        confirm: bool = True,
        persistent: bool = True,
        mandatory: bool = False,
        declare: Iterable[TopologyItem] = (),
        timeout: float = 30.0,
        app_id: str | None = None,
    ) -> None:
        if not isinstance(exchange, (Exchange, str)):
            raise TypeError("exchange must be an Exchange or an exchange name")
        check_shortstr("routing_key", routing_key)
        check_bool("confirm", confirm)
        check_bool("persistent", persistent)
        check_bool("mandatory", mandatory)
        if mandatory and not confirm:
            raise ValueError("mandatory=True needs confirm=True to report unroutable messages")
        timeout = check_timeout("timeout", timeout)
        if app_id is not None:
            check_shortstr("app_id", app_id)
        if isinstance(declare, (str, bytes)) or not isinstance(declare, Iterable):
            raise TypeError("declare must be a list of Exchange, Queue and Binding objects")
        self._conn, self._owns_conn = resolve_connection(connection)
        self.exchange = exchange
        self.exchange_name = exchange.name if isinstance(exchange, Exchange) else exchange
        self.routing_key = routing_key
        self._codec: Codec[T] | None = codec_for(model) if model is not None else None
        self.confirm = confirm
        self.delivery_mode = PERSISTENT if persistent else TRANSIENT
        self.mandatory = mandatory
        self.timeout = timeout
        self.app_id = app_id
        self._declare = list(declare)
        if isinstance(exchange, Exchange) and not exchange.is_default:
            self._declare.insert(0, exchange)
        self._channel: ChannelApi | None = None
        self._lock = threading.Lock()
        self._life = LifecycleState("the publisher")
        self._writes: deque[Future[None]] = deque()
        self._delays = DelayQueues(self._declare_delay_queue)

    def __repr__(self) -> str:
        return (
            f"<Publisher exchange={self.exchange_name!r} confirm={self.confirm} "
            f"conn={self._conn!r}>"
        )

    # ----------------------------------------------------------------- lifecycle
    def open(self) -> Self:
        """Open the channel and declare the topology (done on first publish otherwise).

        Returns:
            This publisher.

        Raises:
            ClosedError: The publisher was closed.
            PreconditionFailed: The exchange exists with other settings.
        """
        self._ensure_channel()
        return self

    def _ensure_channel(self) -> ChannelApi:
        ch = self._channel
        if ch is not None:
            return ch
        with self._lock:
            self._life.check_usable()
            if self._channel is None:
                if self._owns_conn and not self._conn.is_open:
                    self._conn.open()
                ch = self._conn.channel(confirms=self.confirm)
                if self._declare:
                    try:
                        ch.declare(self._declare)
                    except BaseException:
                        ch.close()
                        raise
                self._channel = ch
                self._life.move(Lifecycle.OPEN)
            return self._channel

    def close(self) -> None:
        """Wait for outstanding writes, close the channel (and an owned connection). Idempotent."""
        with self._lock:
            if not self._life.move(Lifecycle.CLOSING):
                return
        try:
            while self._writes:
                try:
                    self._writes.popleft().result(self.timeout)
                except Exception:
                    pass
            if self._channel is not None:
                self._channel.close()
            if self._owns_conn:
                self._conn.close()
        finally:
            self._life.move(Lifecycle.CLOSED)

    # ----------------------------------------------------------------- publishing
    def _build(
        self,
        body: T,
        routing_key: str | None,
        headers: Mapping[str, FieldValue] | None,
        mandatory: bool | None,
        properties: Mapping[str, Any],
        batch: Batch | None = None,
        index: int = 0,
    ) -> OutgoingMessage:
        # everything is checked before the message is built, so nothing unencodable ever
        # reaches pika (and nothing of a batch leaves before all of it passed)
        if properties:
            _check_properties(properties)
        if headers is not None:
            check_field_table("headers", headers)
        if mandatory is not None:
            check_bool("mandatory", mandatory)
        rk = self.routing_key if routing_key is None else routing_key
        check_shortstr("routing_key", rk)
        if self._codec is not None:
            data, content_type = self._codec.encode(body)
        else:
            data, content_type = encode_any(body)
        limit = self._conn.settings.max_message_size
        if len(data) > limit:
            raise MessageTooLarge(
                size=len(data), limit=limit, exchange=self.exchange_name, routing_key=rk
            )
        if not properties:
            # fast path: only hutch's own defaults, nothing to validate
            pika_props = basic_properties(
                content_type=content_type,
                delivery_mode=self.delivery_mode,
                message_id=_message_id(),
                timestamp=int(time.time()),
                app_id=self.app_id,
                headers=dict(headers) if headers is not None else None,
            )
        else:
            props: dict[str, Any] = {
                "content_type": content_type,
                "delivery_mode": self.delivery_mode,
                "message_id": _message_id(),
                "timestamp": _dt.datetime.now(_dt.timezone.utc),
            }
            if self.app_id is not None:
                props["app_id"] = self.app_id
            if headers is not None:
                props["headers"] = dict(headers)
            properties = _expiration_as_str(properties)
            check_basic_properties(properties)
            props.update(properties)
            pika_props = to_pika_properties(Properties(**props))
        return OutgoingMessage(
            self.exchange_name,
            rk,
            data,
            pika_props,
            self.mandatory if mandatory is None else mandatory,
            batch=batch,
            index=index,
        )

    def publish(
        self,
        body: T,
        *,
        routing_key: str | None = None,
        headers: Mapping[str, FieldValue] | None = None,
        mandatory: bool | None = None,
        timeout: float | None = None,
        delay: float | _dt.timedelta | None = None,
        **properties: Any,
    ) -> str:
        """Publish one message and, with confirms, wait until the broker confirmed it.

        Args:
            body: The body, of the publisher's model type.
            routing_key: Overrides the publisher's default routing key.
            headers: Application headers.
            mandatory: Overrides the publisher's ``mandatory`` setting.
            timeout: Seconds to wait for the confirm (default: the publisher's).
            delay: Deliver the message this long from now (seconds or a ``timedelta``,
                rounded to milliseconds; None or 0: at once). It waits in a broker-side
                delay queue (see "Delayed messages" in the docs); the confirm, and
                ``mandatory``, are about that queue, not the final target.
            **properties: Any AMQP basic property (``correlation_id``, ``reply_to``,
                ``expiration`` as milliseconds string or ``timedelta``, ``priority``,
                ``message_id``, ``type``, ``delivery_mode``...).

        Returns:
            The message id.

        Raises:
            Unroutable: ``mandatory`` and no queue matched.
            Nacked: The broker refused the message.
            MessageTooLarge: The body is over the connection's ``max_message_size``.
            ConnectionBlocked: The broker blocked publishing for longer than the
                connection's ``publish_blocked_timeout``.
            OperationTimeout: No confirm within ``timeout`` seconds of connected time
                (time spent recovering a lost connection does not count).
            ConnectionLost: The connection was lost and its recovery policy gave up.
            PublishError: Called with confirms on the connection's I/O thread (in a
                future's done-callback, say), where waiting for the confirm would hang;
                nothing is sent. Use :meth:`publish_async` there.
            TypeError: Unknown property names, a body of the wrong type, or a ``delay``
                that is not seconds or a ``timedelta``.
            ValueError: A ``delay`` that is negative, not finite or over 2**32-1 ms, or
                given together with ``expiration``.
        """
        check_timeout("timeout", timeout, allow_none=True)
        delay_ms = check_publish_delay(delay, properties)
        message = self._build(body, routing_key, headers, mandatory, properties)
        if delay_ms:
            self._to_delay_queue(message, delay_ms)
        tel = self._conn.telemetry
        if not tel.enabled:
            self._send_maybe_delayed(message, timeout, delay_ms)
            return message.message_id or ""
        with _publish_span(tel, message) as span:
            _inject(span, message)
            try:
                self._send_maybe_delayed(message, timeout, delay_ms)
            except PublishError as exc:
                if self.confirm:
                    _count_outcome(tel, message.exchange, exc)
                raise
        if self.confirm:
            tel.record_publish_outcome(message.exchange, PublishOutcome.CONFIRMED)
        return message.message_id or ""

    def publish_async(
        self,
        body: T,
        *,
        routing_key: str | None = None,
        headers: Mapping[str, FieldValue] | None = None,
        mandatory: bool | None = None,
        delay: float | _dt.timedelta | None = None,
        **properties: Any,
    ) -> Future[None]:
        """Publish without waiting; the returned future resolves when confirmed.

        Args:
            body: The body.
            routing_key: Overrides the default routing key.
            headers: Application headers.
            mandatory: Overrides the publisher's ``mandatory`` setting.
            delay: As for :meth:`publish`; the delay queue is declared before this
                returns (that waits for the broker once per delay and target).
            **properties: AMQP basic properties.

        Returns:
            A future whose ``result()`` raises :class:`~hutch.PublishError` subclasses.

        Raises:
            TypeError: A ``delay`` that is not seconds or a ``timedelta``.
            ValueError: A bad ``delay`` (see :meth:`publish`).
        """
        delay_ms = check_publish_delay(delay, properties)
        message = self._build(body, routing_key, headers, mandatory, properties)
        if delay_ms:
            self._to_delay_queue(message, delay_ms)
        ch = self._ensure_channel()
        ch.wait_unblocked()
        tel = self._conn.telemetry
        if not tel.enabled:
            return ch.publish(message)
        # the span covers the hand-over; the confirm is counted when it comes
        with _publish_span(tel, message) as span:
            _inject(span, message)
            fut = ch.publish(message)
        if self.confirm:
            exchange = message.exchange
            fut.add_done_callback(lambda f: _count_outcome(tel, exchange, f.exception()))
        return fut

    def publish_many(
        self,
        bodies: Iterable[T],
        *,
        routing_key: str | None = None,
        headers: Mapping[str, FieldValue] | None = None,
        timeout: float | None = None,
        **properties: Any,
    ) -> BatchResult:
        """Publish a batch with pipelined confirms; return once every message is settled.

        Args:
            bodies: The bodies.
            routing_key: Routing key for all of them (default: the publisher's).
            headers: Headers for all of them.
            timeout: Seconds to wait for the whole batch to be confirmed.
            **properties: AMQP basic properties for all of them (not ``message_id``).

        Returns:
            Which messages were confirmed, and which failed with what error.

        Raises:
            OperationTimeout: The batch was not settled within ``timeout`` (time spent
                recovering a lost connection does not count).
            ConnectionBlocked: The broker blocked publishing for longer than the
                connection's ``publish_blocked_timeout``.
        """
        if "message_id" in properties:
            raise TypeError("publish_many generates one message_id per message; do not pass one")
        check_timeout("timeout", timeout, allow_none=True)
        if isinstance(bodies, (str, bytes)) or not isinstance(bodies, Iterable):
            raise TypeError("bodies must be a list (or other iterable) of message bodies")
        items = bodies if isinstance(bodies, (list, tuple)) else list(bodies)
        batch = Batch(len(items))
        # every body is encoded (and may be refused) before the first message goes out
        messages = [
            self._build(b, routing_key, headers, None, properties, batch, i)
            for i, b in enumerate(items)
        ]
        ch = self._ensure_channel()
        self._check_may_wait(ch, self.routing_key if routing_key is None else routing_key)
        ch.wait_unblocked()
        tel = self._conn.telemetry
        if not tel.enabled or not messages:
            ch.publish_many(messages, direct=True)
            return self._settle_batch(ch, batch, [m.message_id or "" for m in messages], timeout)
        # one producer span for the batch; every message carries its context
        with _publish_span(tel, messages[0], len(messages)) as span:
            for m in messages:
                _inject(span, m)
            ch.publish_many(messages, direct=True)
            result = self._settle_batch(ch, batch, [m.message_id or "" for m in messages], timeout)
        if self.confirm:
            _count_batch(tel, self.exchange_name, result)
        return result

    def batch(
        self,
        *,
        routing_key: str | None = None,
        headers: Mapping[str, FieldValue] | None = None,
        timeout: float | None = None,
        max_in_flight: int = 10_000,
        **properties: Any,
    ) -> ConfirmBatch[T]:
        """A confirm-batch context: publish a stream, confirms pipelined, settle on exit.

        Messages go out as they are added (a few hundred at a time) while the broker's
        confirms for earlier ones come back; leaving the ``with`` block waits until every
        message is confirmed or failed, and puts the outcome in ``batch.result``. Unlike
        :meth:`publish_many`, the messages need not be known (or fit in memory) up front:
        at most ``max_in_flight`` wait for their confirm at any time.

        Args:
            routing_key: Default routing key of the batch's messages.
            headers: Default headers.
            timeout: Seconds to wait for the confirms (and for room in the window).
            max_in_flight: Most messages published but not yet confirmed.
            **properties: Default AMQP properties (not ``message_id``).

        Returns:
            The batch, to use as a context manager.

        Raises:
            ValueError: ``max_in_flight`` is not positive.
            TypeError: A ``message_id`` property was given.

        Example:
            >>> with pub.batch() as batch:  # doctest: +SKIP
            ...     for order in orders:
            ...         batch.publish(order)
            >>> batch.result.raise_for_failures()  # doctest: +SKIP
        """
        if "message_id" in properties:
            raise TypeError("a batch generates one message_id per message; do not pass one")
        check_int("max_in_flight", max_in_flight, 1)
        check_timeout("timeout", timeout, allow_none=True)
        if routing_key is not None:
            check_shortstr("routing_key", routing_key)
        if headers is not None:
            check_field_table("headers", headers)
        if properties:
            _check_properties(properties)
            check_basic_properties(_expiration_as_str(properties))
        return ConfirmBatch(self, routing_key, headers, timeout, max_in_flight, properties)

    def _settle_batch(
        self, ch: ChannelApi, batch: Batch, ids: list[str], timeout: float | None
    ) -> BatchResult:
        wait = self.timeout if timeout is None else timeout
        started = time.monotonic()
        # read the confirms on this thread (for as long as the batch may take)
        ch.pump(batch.future, wait)
        self._wait_confirmed(
            ch, batch.future, wait, started, f"batch of {len(ids)} messages not confirmed"
        )
        result = BatchResult(message_ids=ids)
        for i, exc in sorted(batch.errors.items()):
            error = (
                exc
                if isinstance(exc, PublishError)
                else PublishError(str(exc), exchange=self.exchange_name, message_id=ids[i])
            )
            result.failed.append((i, error))
        return result

    # ----------------------------------------------------------------- delays
    def _declare_delay_queue(self, queue: Queue) -> None:
        self._ensure_channel().declare([queue], timeout=self.timeout)

    def _to_delay_queue(self, message: OutgoingMessage, ms: int) -> None:
        durable = self.delivery_mode == PERSISTENT
        self._delays.readdress(message, self.exchange_name, ms, durable, self.confirm)

    def _send_maybe_delayed(self, message: OutgoingMessage, timeout: float | None, ms: int) -> None:
        """:meth:`_send`; a delay queue deleted under the publisher is declared again."""
        try:
            self._send(message, timeout)
        except Unroutable:
            if not ms:
                raise
            self._send(self._delays.after_return(message), timeout)

    def _check_may_wait(self, ch: ChannelApi, routing_key: str) -> None:
        """Refuse at once a confirmed publish on the connection's I/O thread (it would hang)."""
        if not self.confirm:
            return
        reason = ch.blocking_refused(
            "a confirmed publish",
            "use publish_async() there and do not wait on its future, or hand the work to "
            "another thread",
        )
        if reason is not None:
            raise PublishError(reason, exchange=self.exchange_name, routing_key=routing_key)

    def _send(self, message: OutgoingMessage, timeout: float | None) -> None:
        ch = self._ensure_channel()
        self._check_may_wait(ch, message.routing_key)
        ch.wait_unblocked()
        wait = self.timeout if timeout is None else timeout
        started = time.monotonic()
        if not self.confirm:
            fut = ch.publish(message)
        else:
            # this thread sends the message and reads its confirm itself when it can: no
            # hand-over to the I/O thread and back
            ch.publish_and_wait(message, min(wait, _PUMP_LIMIT))
            fut = message.future
        if not self.confirm:
            # no confirms: return at once, but bound what is queued for the I/O thread
            self._writes.append(fut)
            while len(self._writes) > _MAX_UNCONFIRMED_WRITES:
                self._writes.popleft().result(wait)
            if fut.done() and fut.exception() is not None:
                raise fut.exception()  # type: ignore[misc]
            return
        if fut.done():
            fut.result()  # raises what the broker said (nack, unroutable...)
            return
        self._wait_confirmed(
            ch,
            fut,
            wait,
            started,
            "no confirm from the broker",
            f" for a message to exchange {self.exchange_name!r}",
        )

    def _wait_confirmed(
        self,
        ch: ChannelApi,
        fut: Future[None],
        wait: float,
        started: float,
        what: str,
        after: str = "",
    ) -> None:
        """Wait for ``fut`` for what is left of ``wait`` seconds since ``started``.

        Raises:
            OperationTimeout: Not settled in time: "{what} within {wait} s{after}".
            ConnectionBlocked: The broker blocked publishing for too long.
        """
        try:
            # time spent reading confirms on this thread counts against the timeout too
            ch.wait_settled(fut, max(0.0, wait - (time.monotonic() - started)))
        except ConnectionBlocked:
            raise  # a TimeoutError too: must not be taken for the confirm timeout
        except FutureTimeout:
            raise OperationTimeout(f"{what} within {wait} s{after}") from None

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every message published without confirms was handed to the socket.

        Args:
            timeout: Seconds to wait for each outstanding write.

        Raises:
            PublishError: Called on the connection's I/O thread (a future's done-callback,
                say) with writes outstanding: only that thread could do them (at once).
        """
        wait = self.timeout if timeout is None else check_timeout("timeout", timeout)
        if self._writes and self._channel is not None:
            reason = self._channel.blocking_refused(
                "flush()", "call it from another thread, outside any callback"
            )
            if reason is not None:
                raise PublishError(reason, exchange=self.exchange_name)
        while self._writes:
            self._writes.popleft().result(wait)
