"""Subscriber[T]: typed consumption for broadcast and routing (direct, topic, headers)."""

from __future__ import annotations

import datetime as _dt
import inspect
import logging
import threading
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Union, overload

from hutch._amqp import ChannelApi, Delivery
from hutch._checks import (
    check_bool,
    check_field_table,
    check_field_value,
    check_int,
    check_shortstr,
    check_timeout,
)
from hutch._clock import Mailbox
from hutch._connection import Connection, resolve_connection
from hutch._dead_letter import DeadLetters, Disposition
from hutch._exceptions import (
    ConsumerCancelled,
    DecodeError,
    MessageError,
    NotFound,
)
from hutch._lifecycle import Lifecycle, LifecycleState
from hutch._message import Message
from hutch._resource import Resource
from hutch._serialization import Codec, codec_for, decode_any
from hutch._signals import graceful_signals
from hutch._telemetry import NOOP_SCOPE, Scope, Settlement
from hutch._topology import Binding, Exchange, ExchangeType, Queue, TopologyItem

if TYPE_CHECKING:
    from typing_extensions import Self

    from hutch._topology import FieldValue

__all__ = ["Subscriber", "decode_delivery"]

log = logging.getLogger("hutch")

T = TypeVar("T")

Handler = Union[Callable[[T], object], Callable[[T, Message[T]], object]]

#: Name of the shared dead-letter queue for subscribers on server-named queues.
DEFAULT_DEAD_LETTER_QUEUE = "hutch.dead-letters"

_STOP = object()

#: Seconds between checks whether a deleted queue exists again (``on_cancel="resubscribe"``).
_RESUBSCRIBE_POLL = 1.0


def decode_delivery(codec: Codec[T] | None, delivery: Delivery) -> Message[T]:
    """Decode a raw delivery into a typed :class:`~hutch.Message`.

    Args:
        codec: The body codec; None decodes by content type.
        delivery: The raw delivery.

    Returns:
        The message.

    Raises:
        DecodeError: A property or header cannot be decoded (see ``Delivery.problem``).
        MessageError: The body cannot be decoded or validated.
    """
    problem = delivery.problem
    if problem is not None:
        raise DecodeError(problem)
    if codec is None:
        body: Any = decode_any(delivery.body, delivery.content_type)
    else:
        body = codec.decode(delivery.body, delivery.content_type)
    return Message(
        body=body,
        raw_body=delivery.body,
        properties=delivery.properties,
        exchange=delivery.exchange,
        routing_key=delivery.routing_key,
        redelivered=delivery.redelivered,
        delivery_tag=delivery.delivery_tag,
        consumer_tag=delivery.consumer_tag,
    )


def wants_message(handler: Callable[..., object]) -> bool:
    """True if ``handler`` takes a second positional parameter (the Message).

    Args:
        handler: The user's handler.

    Returns:
        Whether to call it as ``handler(body, message)``.
    """
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    return len(positional) >= 2


class Subscriber(Resource, Generic[T]):
    """Receives bodies of type ``T`` from exchanges, by broadcast or by routing.

    Without ``queue`` the subscriber gets its own server-named, exclusive queue (deleted
    when it closes) bound to every exchange in ``exchange`` with every key in
    ``routing_keys``: N subscribers on a fanout exchange each receive every message. Pass a
    named :class:`~hutch.Queue` for a subscription that must outlive the process.

    Handlers run on the thread that calls :meth:`run` (or iterates :meth:`messages`), never
    on the connection's I/O thread, so they may take as long as they need. A message is
    acked after its handler returns. A message that cannot be decoded or validated, or
    whose handler raises, is published to the dead-letter queue with the reason in
    ``x-hutch-error`` headers and then acked; the loop keeps going.

    Args:
        connection: A :class:`~hutch.Connection` or a URL (owned); None (the default) is
            ``HUTCH_URL``'s broker.
        exchange: One exchange or several (objects are declared; names must exist).
        routing_keys: Binding keys (exact for direct, patterns with ``*``/``#`` for topic).
            For fanout exchanges the key is ignored.
        headers: For headers exchanges: the headers to match.
        match: ``"all"`` or ``"any"`` of ``headers`` must match.
        queue: A named queue to consume (a :class:`~hutch.Queue` is declared; a name must
            exist). Default: a server-named exclusive queue.
        bindings: Further bindings of the queue (use the queue's name).
        model: The body type; None decodes by content type (JSON, text, else bytes).
        prefetch: Unacked messages the broker may send ahead (``basic.qos``).
        dead_letter_queue: Where undecodable messages and failed handlers' messages go.
            Default ``<queue>.dead`` for named queues, ``hutch.dead-letters`` otherwise.
        timeout: Seconds allowed for each broker operation.
        on_cancel: What to do when the broker cancels the consumer (its queue was deleted):
            ``"raise"`` (default) makes :meth:`run` and :meth:`messages` raise
            :class:`~hutch.ConsumerCancelled`; ``"resubscribe"`` logs it, waits until the
            queue exists again (polling every second; a server-named queue is declared anew
            at once), re-declares the bindings and consumes again. Never silent either way.
        offset: For a stream (``Queue(..., queue_type="stream")``): where to start
            reading, sent as the consumer argument ``x-stream-offset``. ``"first"`` (the
            oldest message kept), ``"last"`` (the last chunk written), ``"next"`` (only
            messages published from now on; the broker's default), a whole number (that
            offset in the log), or a :class:`~datetime.datetime` (naive means local
            time): the first chunk written at or after it. The broker stores time per
            chunk of messages, not per message, so a datetime offset may also return a
            few messages published shortly before it. After a reconnect the consumer
            starts again from the same offset.
        consumer_arguments: Further ``basic.consume`` arguments, e.g. ``{"x-priority":
            10}``; ``offset`` wins over an ``x-stream-offset`` given here.

    Raises:
        TypeError: A wrong argument type.
        ValueError: Inconsistent arguments (e.g. headers on a topic exchange).

    Example:
        >>> logs = Exchange("logs", type="fanout")
        >>> with Subscriber(conn, exchange=logs, model=str) as sub:  # doctest: +SKIP
        ...     for msg in sub.messages(timeout=5):
        ...         print(msg.body)
    """

    @overload
    def __init__(
        self: Subscriber[object],
        connection: Connection | str | None = None,
        *,
        exchange: Exchange | str | Sequence[Exchange | str] = (),
        routing_keys: str | Iterable[str] = ("",),
        headers: Mapping[str, FieldValue] | None = None,
        match: Literal["all", "any"] = "all",
        queue: Queue | str | None = None,
        bindings: Iterable[Binding] = (),
        model: None = None,
        prefetch: int = 100,
        dead_letter_queue: Queue | str | None = None,
        timeout: float = 30.0,
        on_cancel: Literal["raise", "resubscribe"] = "raise",
        offset: StreamOffset | None = None,
        consumer_arguments: Mapping[str, FieldValue] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        exchange: Exchange | str | Sequence[Exchange | str] = (),
        routing_keys: str | Iterable[str] = ("",),
        headers: Mapping[str, FieldValue] | None = None,
        match: Literal["all", "any"] = "all",
        queue: Queue | str | None = None,
        bindings: Iterable[Binding] = (),
        model: type[T],
        prefetch: int = 100,
        dead_letter_queue: Queue | str | None = None,
        timeout: float = 30.0,
        on_cancel: Literal["raise", "resubscribe"] = "raise",
        offset: StreamOffset | None = None,
        consumer_arguments: Mapping[str, FieldValue] | None = None,
    ) -> None: ...

    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        exchange: Exchange | str | Sequence[Exchange | str] = (),
        routing_keys: str | Iterable[str] = ("",),
        headers: Mapping[str, FieldValue] | None = None,
        match: Literal["all", "any"] = "all",
        queue: Queue | str | None = None,
        bindings: Iterable[Binding] = (),
        model: type[T] | None = None,
        prefetch: int = 100,
        dead_letter_queue: Queue | str | None = None,
        timeout: float = 30.0,
        on_cancel: Literal["raise", "resubscribe"] = "raise",
        offset: StreamOffset | None = None,
        consumer_arguments: Mapping[str, FieldValue] | None = None,
    ) -> None:
        if on_cancel not in ("raise", "resubscribe"):
            raise ValueError("on_cancel must be 'raise' or 'resubscribe'")
        self._consumer_arguments = consumer_args(offset, consumer_arguments)
        exchanges = [exchange] if isinstance(exchange, (Exchange, str)) else list(exchange)
        for ex in exchanges:
            if not isinstance(ex, (Exchange, str)):
                raise TypeError("exchange must be an Exchange, a name, or a list of them")
        if isinstance(routing_keys, bytes) or not isinstance(routing_keys, (str, Iterable)):
            raise TypeError("routing_keys must be a str or a list of str")
        keys = [routing_keys] if isinstance(routing_keys, str) else list(routing_keys)
        if not keys:
            raise ValueError("routing_keys must name at least one key")
        for key in keys:
            check_shortstr("routing_keys", key)
        check_int("prefetch", prefetch, 1, 65535)
        timeout = check_timeout("timeout", timeout)
        if headers is not None:
            check_field_table("headers", headers)
        if match not in ("all", "any"):
            raise ValueError("match must be 'all' or 'any'")
        if headers is not None:
            for ex in exchanges:
                if isinstance(ex, Exchange) and ex.exchange_type is not ExchangeType.HEADERS:
                    kind = ex.exchange_type.value
                    raise ValueError(f"headers= needs a headers exchange; {ex.name!r} is {kind}")
        if queue is None:
            if not exchanges:
                raise ValueError("give an exchange to subscribe to, or a queue to consume")
            queue = Queue("")
        if not isinstance(queue, (Queue, str)):
            raise TypeError("queue must be a Queue or a queue name")
        if isinstance(queue, str):
            check_shortstr("queue", queue)
        self._conn, self._owns_conn = resolve_connection(connection)
        self.queue = queue
        self._codec: Codec[T] | None = codec_for(model) if model is not None else None
        self.prefetch = prefetch
        self.timeout = timeout
        topology: list[TopologyItem] = [ex for ex in exchanges if isinstance(ex, Exchange)]
        if isinstance(queue, Queue):
            topology.append(queue)
        for ex in exchanges:
            if headers is not None:
                topology.append(Binding(ex, queue, headers=headers, match=match))
            else:
                topology.extend(Binding(ex, queue, routing_key=k) for k in keys)
        topology.extend(bindings)
        self._topology = topology
        if dead_letter_queue is None:
            name = queue if isinstance(queue, str) else queue.name
            dead_letter_queue = f"{name}.dead" if name else DEFAULT_DEAD_LETTER_QUEUE
        self.dead_letter_queue = (
            dead_letter_queue if isinstance(dead_letter_queue, Queue) else Queue(dead_letter_queue)
        )
        self._channel: ChannelApi | None = None
        self._dead: DeadLetters | None = None
        self._buffer: Mailbox[Delivery | object] = Mailbox()
        self._tag: str | None = None
        self._stopping = threading.Event()
        self._cancelled: str | None = None
        self.on_cancel = on_cancel
        self._lock = threading.Lock()
        self._life = LifecycleState("the subscriber")
        #: Messages the handler took and that were acked.
        self.handled = 0
        #: Messages whose copy the dead-letter queue confirmed (then acked).
        self.dead_lettered = 0
        #: Failed messages whose dead letter could not be placed: requeued after a pause.
        self.requeued = 0

    def __repr__(self) -> str:
        return f"<Subscriber queue={self.queue_name!r} conn={self._conn!r}>"

    @property
    def queue_name(self) -> str:
        """The queue's name on the broker (known once open for server-named queues)."""
        if self._channel is not None:
            try:
                return self._channel.queue_name(self.queue)
            except ValueError:
                pass
        return self.queue if isinstance(self.queue, str) else self.queue.name

    # ----------------------------------------------------------------- lifecycle
    def open(self) -> Self:
        """Declare the queue and bindings and start receiving into a local buffer.

        Returns:
            This subscriber.

        Raises:
            PreconditionFailed: An entity exists with other settings.
            NotFound: A named queue or exchange does not exist.
            ClosedError: The subscriber was closed.
        """
        with self._lock:
            self._life.check_usable()
            if self._channel is not None:
                return self
            if self._owns_conn and not self._conn.is_open:
                self._conn.open()
            ch = self._conn.channel()
            try:
                ch.declare(self._topology, timeout=self.timeout)
                ch.qos(self.prefetch, timeout=self.timeout)
                self._dead = DeadLetters(
                    self._conn, self.dead_letter_queue, ch.queue_name(self.queue)
                )
                self._tag = ch.consume(
                    self.queue,
                    self._buffer.put,
                    arguments=self._consumer_arguments,
                    on_cancel=self._on_cancel,
                    timeout=self.timeout,
                )
            except BaseException:
                ch.close()
                raise
            self._channel = ch
            self._life.move(Lifecycle.OPEN)
        return self

    def _on_cancel(self, queue: str) -> None:  # I/O thread
        self._cancelled = queue
        self._buffer.put(_STOP)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the message in hand. Thread- and signal-safe."""
        self._stopping.set()
        self._buffer.put(_STOP)

    def close(self) -> None:
        """Stop consuming, requeue buffered messages, close the channel. Idempotent."""
        with self._lock:
            if not self._life.move(Lifecycle.CLOSING):
                return
        self.stop()
        ch = self._channel
        if ch is not None:
            try:
                if self._tag is not None and self._conn.is_open:
                    ch.cancel(self._tag, timeout=self.timeout)
            except Exception:
                log.debug("hutch: cancel failed on close", exc_info=True)
            while (item := self._buffer.take()) is not None:
                if isinstance(item, Delivery):
                    item.nack(requeue=True)
            ch.close()
        if self._dead is not None:
            self._dead.close()
        if self._owns_conn:
            self._conn.close()
        self._life.move(Lifecycle.CLOSED)

    # ----------------------------------------------------------------- receiving
    def _next_delivery(self, timeout: float | None) -> Delivery | None:
        clock = self._conn.clock
        deadline = clock.deadline(timeout)
        while True:
            if self._stopping.is_set():
                return None
            # past the deadline (a short timeout, a thread that was not scheduled for a
            # while) a message that already waits is still taken
            item = self._buffer.get(clock, deadline, poll=0.5)
            if item is None:
                left = clock.left(deadline)
                if left is not None and left <= 0:
                    return None
                ch = self._channel
                if ch is not None:  # set while consuming
                    ch.check_connection()
                continue
            if isinstance(item, Delivery):
                if not item.channel.is_current(item):
                    # delivered on a channel that died since: its ack would be dropped and
                    # the broker redelivers it, so handling it now would only duplicate work
                    continue
                return item
            if self._cancelled is not None:
                if self.on_cancel == "raise":
                    raise ConsumerCancelled(self._cancelled)
                if not self._resubscribe(deadline):
                    return None
            if self._stopping.is_set():
                return None

    def _resubscribe(self, deadline: float | None) -> bool:
        """Wait for the cancelled consumer's queue to exist again and consume it again.

        Returns:
            True when consuming again; False when stopped or ``deadline`` passed first.
        """
        queue, ch = self._cancelled, self._channel
        assert queue is not None
        assert ch is not None
        fresh = isinstance(self.queue, Queue) and self.queue.server_named
        log.warning(
            "hutch: the broker cancelled the consumer of queue %r (queue deleted?); "
            "re-subscribing once it exists again",
            queue,
        )
        while not fresh:
            try:
                ch.message_count(queue, timeout=self.timeout)
                break
            except NotFound:
                pass
            left = self._conn.clock.left(deadline)
            if left is not None and left <= 0:
                return False
            if self._conn.clock.wait(
                self._stopping.is_set,
                self._stopping.wait,
                self._conn.clock.deadline(_RESUBSCRIBE_POLL),
            ):
                return False
        with self._lock:
            self._cancelled = None
            ch.declare(self._topology, timeout=self.timeout)
            self._tag = ch.consume(
                self.queue,
                self._buffer.put,
                arguments=self._consumer_arguments,
                on_cancel=self._on_cancel,
                timeout=self.timeout,
            )
        log.warning("hutch: re-subscribed to queue %r", ch.queue_name(self.queue))
        return True

    def _decode_or_dead_letter(
        self, delivery: Delivery, span: Scope = NOOP_SCOPE
    ) -> Message[T] | None:
        try:
            return decode_delivery(self._codec, delivery)
        except MessageError as exc:
            span.fail(exc)
            self._dead_letter(delivery, exc, span)
            return None

    def _dead_letter(
        self, delivery: Delivery, exc: BaseException, span: Scope = NOOP_SCOPE
    ) -> None:
        assert self._dead is not None
        went = self._dead.send(
            delivery, reason=str(exc), error_type=type(exc).__name__, timeout=self.timeout
        )
        if went is Disposition.DEAD_LETTERED:
            self.dead_lettered += 1
        else:
            self.requeued += 1
        span.settle(
            Settlement.DEAD_LETTERED if went is Disposition.DEAD_LETTERED else Settlement.REQUEUED,
            reason=str(exc),
            error_type=type(exc).__name__,
        )

    def _process_span(self, delivery: Delivery) -> Scope:
        """The consumer span of one delivery (telemetry on), child of its headers' context."""
        return self._conn.telemetry.delivery_span(delivery, self.queue_name)

    def _handle(
        self, handler: Handler[T], call_with_message: bool, delivery: Delivery, span: Scope
    ) -> bool:
        """Decode, call the handler, ack or dead-letter; True if the handler succeeded."""
        message = self._decode_or_dead_letter(delivery, span)
        if message is None:
            return False
        try:
            if call_with_message:
                handler(message.body, message)  # type: ignore[call-arg]
            else:
                handler(message.body)  # type: ignore[call-arg]
        except Exception as exc:
            log.debug("hutch: handler raised", exc_info=True)
            span.fail(exc)
            self._dead_letter(delivery, exc, span)
            return False
        delivery.ack()
        if span is not NOOP_SCOPE:  # no call per message when telemetry is off
            span.settle(Settlement.ACKED)
        return True

    def run(
        self,
        handler: Handler[T],
        *,
        limit: int | None = None,
        timeout: float | None = None,
        handle_signals: bool = True,
    ) -> int:
        """Call ``handler`` for each message until :meth:`stop` (blocking).

        ``handler(body)`` or ``handler(body, message)`` (for headers, routing key,
        redelivered...). It runs on this thread; the message is acked when it returns.

        On the main thread, the first SIGTERM or SIGINT stops it gracefully: the message
        in hand is handled and acked, then ``run`` returns the count; a second one
        raises :class:`KeyboardInterrupt` at once (see :mod:`hutch._signals`). The
        previous handlers are restored on return.

        Args:
            handler: The message handler.
            limit: Return after this many messages.
            timeout: Return when no message arrives for this many seconds.
            handle_signals: False leaves SIGTERM/SIGINT to the caller.

        Returns:
            How many messages were handled successfully.

        Raises:
            ConsumerCancelled: The broker cancelled the consumer (queue deleted) and
                ``on_cancel`` is ``"raise"``.
            ConnectionLost: The connection failed for good.
            TypeError: ``handler`` is not callable, or a wrong argument type.
            ValueError: A negative ``limit`` or a timeout that is not a finite number of
                seconds greater than 0.
            KeyboardInterrupt: A second SIGTERM/SIGINT while finishing the message in hand.
        """
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        _check_run_args(limit, timeout)
        check_bool("handle_signals", handle_signals)
        self.open()
        self._stopping.clear()
        what = f"the subscriber of {self.queue_name!r}"
        with graceful_signals(self.stop, what, enabled=handle_signals):
            return self._run(handler, limit, timeout)

    def _run(self, handler: Handler[T], limit: int | None, timeout: float | None) -> int:
        call_with_message = wants_message(handler)
        traced = self._conn.telemetry.enabled
        done = 0
        while limit is None or done < limit:
            delivery = self._next_delivery(timeout)
            if delivery is None:
                break
            if not traced:
                ok = self._handle(handler, call_with_message, delivery, NOOP_SCOPE)
            else:
                with self._process_span(delivery) as span:
                    ok = self._handle(handler, call_with_message, delivery, span)
            if not ok:
                continue
            done += 1
            self.handled += 1
        return done

    def messages(
        self, *, timeout: float | None = None, limit: int | None = None
    ) -> Generator[Message[T], None, None]:
        """Iterate over messages; each is acked when the loop asks for the next one.

        Args:
            timeout: Stop when no message arrives for this many seconds (None: never).
            limit: Stop after this many messages.

        Yields:
            Decoded messages. Undecodable ones are dead-lettered and skipped.

        Raises:
            ConsumerCancelled: The broker cancelled the consumer and ``on_cancel`` is
                ``"raise"``.
            TypeError: A wrong argument type (raised at once, not at the first message).
            ValueError: A negative ``limit`` or a timeout that is not a finite number of
                seconds greater than 0.
        """
        _check_run_args(limit, timeout)
        return self._messages(timeout, limit)

    def _messages(
        self, timeout: float | None, limit: int | None
    ) -> Generator[Message[T], None, None]:
        self.open()
        self._stopping.clear()
        count = 0
        while limit is None or count < limit:
            delivery = self._next_delivery(timeout)
            if delivery is None:
                return
            if self._conn.telemetry.enabled:
                # the span covers the loop's body: what the caller does with the message
                with self._process_span(delivery) as span:
                    message = self._decode_or_dead_letter(delivery, span)
                    if message is None:
                        continue
                    try:
                        yield message
                    except GeneratorExit:
                        delivery.ack()
                        span.settle(Settlement.ACKED)
                        raise
                    delivery.ack()
                    span.settle(Settlement.ACKED)
                count += 1
                self.handled += 1
                continue
            message = self._decode_or_dead_letter(delivery)
            if message is None:
                continue
            try:
                yield message
            except GeneratorExit:
                delivery.ack()
                raise
            delivery.ack()
            count += 1
            self.handled += 1

    def get(self, timeout: float | None = None) -> Message[T] | None:
        """Receive one message and ack it, or None after ``timeout`` seconds.

        Args:
            timeout: Seconds to wait (None: forever).

        Returns:
            The message, or None.
        """
        for message in self.messages(timeout=timeout, limit=1):
            return message
        return None


StreamOffset = Union[Literal["first", "last", "next"], int, _dt.datetime]


def consumer_args(
    offset: object, arguments: Mapping[str, FieldValue] | None
) -> dict[str, FieldValue]:
    """Check ``offset`` and further consumer arguments; return the ``basic.consume`` table.

    Args:
        offset: ``"first"``, ``"last"``, ``"next"``, a whole number >= 0, a datetime, or
            None.
        arguments: Further consumer arguments, or None.

    Returns:
        The arguments, with ``x-stream-offset`` set from ``offset`` (a datetime in UTC).

    Raises:
        TypeError: An offset or a table of the wrong type.
        ValueError: A negative offset, an unknown word, or a value the wire cannot carry.
    """
    args: dict[str, FieldValue] = {}
    if arguments is not None:
        check_field_table("consumer_arguments", arguments)
        args.update(arguments)
    if offset is None:
        return args
    if isinstance(offset, str):
        if offset not in ("first", "last", "next"):
            raise ValueError(
                f"offset must be 'first', 'last', 'next', a whole number or a datetime, "
                f"got {offset!r}"
            )
        args["x-stream-offset"] = offset
    elif isinstance(offset, _dt.datetime):
        moment = offset.astimezone(_dt.timezone.utc)
        check_field_value("offset", moment)
        args["x-stream-offset"] = moment  # type: ignore[assignment]
    elif isinstance(offset, int) and not isinstance(offset, bool):
        args["x-stream-offset"] = check_int("offset", offset, 0, 2**63 - 1)
    else:
        raise TypeError(
            "offset must be 'first', 'last', 'next', a whole number or a datetime, "
            f"got {type(offset).__name__}"
        )
    return args


def _check_run_args(limit: object, timeout: object) -> None:
    if limit is not None:
        check_int("limit", limit, 0)
    check_timeout("timeout", timeout, allow_none=True)
