"""The memory broker as hutch's second backend: ``hutch.connect("memory://")``.

:class:`MemoryDriver` stands where :class:`hutch._amqp.Driver` stands for RabbitMQ (the
connection's life, listeners, which thread is the connection's), and
:class:`MemoryAmqpChannel` serves the same narrow channel API as
:class:`hutch._amqp.Channel`, so every pattern runs on it unchanged: it hands over the
same :class:`hutch._amqp.Delivery` objects and raises the same hutch exceptions (the
engine raises RabbitMQ's reply codes through the same mapping, see :mod:`.errors`).

Threads: any thread may call a channel. Deliveries, returns, confirms and consumer
cancellations run on the memory connection's callback thread, which plays the part of
pika's I/O thread: :attr:`MemoryAmqpChannel.in_io_thread` is true there, and blocking
calls are refused on it as on RabbitMQ. Nothing here imports pika; a publish's properties
cross a simulated wire (:func:`hutch._amqp.wire.wire_copy`), so header values arrive with
the types a RabbitMQ consumer would see.

Not served (RabbitMQ-only): connection recovery (the broker cannot go away), TLS,
clusters, worker processes (the broker lives in one process).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import operator
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar, cast

from hutch._amqp.properties import Delivery
from hutch._amqp.wire import WIRE_ERRORS, wire_copy
from hutch._clock import REAL_CLOCK, Clock
from hutch._exceptions import (
    ChannelClosed,
    ClosedError,
    HutchError,
    NotFound,
    PublishError,
)
from hutch._memory.broker import REPLY_TO, Returned, get_broker
from hutch._memory.connection import MemoryChannel, MemoryConnection
from hutch._memory.message import Delivery as MemoryDelivery
from hutch._memory.message import Properties as WireProperties
from hutch._message import Properties
from hutch._topology import Binding, Exchange, Queue, TopologyItem, ordered

if TYPE_CHECKING:
    from hutch._amqp import Channel, ChannelApi, OutgoingMessage
    from hutch._settings import Address, ConnectionSettings

__all__ = ["MemoryAmqpChannel", "MemoryDriver"]

log = logging.getLogger("hutch")

R = TypeVar("R")

_FIELDS = tuple(f.name for f in dataclasses.fields(WireProperties))
#: A pika BasicProperties' values in the memory broker's Properties field order.
_VALUES = operator.attrgetter(*_FIELDS)


class MemoryDriver:
    """A connection to the in-process broker named in a ``memory://NAME`` URL (internal).

    States: new -> open (:meth:`start`) -> closed (:meth:`close`); it never fails or
    recovers, since the broker cannot go away.
    """

    def __init__(self, settings: ConnectionSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.connected_address: Address | None = None
        self.recoveries = 0
        self.recovering = False
        self.blocked = False
        self.failure: HutchError | None = None
        self._connection: MemoryConnection | None = None
        self._closing = False
        self._listeners: list[Callable[[str, BaseException | None], None]] = []
        self._channels: list[MemoryAmqpChannel] = []
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """True once started and until closed."""
        return self._connection is not None and not self._closing

    @property
    def clock(self) -> Clock:
        """The broker's clock (real, or virtual for ``?clock=virtual``)."""
        conn = self._connection
        return REAL_CLOCK if conn is None else conn.broker.clock

    def start(self, timeout: float | None) -> None:
        """Connect to the named broker's vhost (no I/O; ``timeout`` is not needed).

        Raises:
            AuthenticationError: The vhost does not exist (RabbitMQ's 530 NOT_ALLOWED).
        """
        if self._connection is not None:
            return
        clock = self.settings.memory_clock  # None: whichever clock the named broker has
        broker = get_broker(
            self.settings.memory or "", virtual_time=None if clock is None else clock == "virtual"
        )
        broker.clock.enter()
        self._connection = broker.connect(self.settings.vhost)
        self.connected_address = self.settings.addresses[0]

    def close(self, timeout: float | None) -> None:
        """Close every channel and the connection (idempotent); listeners hear "closed"."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            channels, self._channels = list(self._channels), []
        error = ClosedError("the connection was closed")
        for ch in channels:
            ch.connection_closed()
        conn = self._connection
        if conn is not None:
            conn.close()
            for listener in list(self._listeners):
                try:
                    listener("closed", error)
                except Exception:
                    log.exception("hutch: a connection listener failed")

    def connection(self) -> MemoryConnection:
        """The engine's connection (raises if not usable)."""
        self.check_usable()
        assert self._connection is not None
        return self._connection

    def check_usable(self) -> None:
        """Raise :class:`~hutch.ClosedError` unless open."""
        if self._closing:
            raise ClosedError("the connection is closed")
        if self._connection is None:
            raise ClosedError("the connection is not open: call open() or use it in a with block")

    @property
    def in_io_thread(self) -> bool:
        """True on the connection's callback thread (where consumers are called)."""
        conn = self._connection
        return conn is not None and conn._thread is threading.current_thread()

    def blocking_refused(self, what: str, instead: str) -> str | None:
        """The same refusal as the pika driver's, on the callback thread."""
        if not self.in_io_thread:
            return None
        return (
            f"{what} cannot wait on the connection's I/O thread (a future's done-callback or "
            "a consumer callback runs there): nothing would read the broker's answer while "
            f"it waits; {instead}"
        )

    def add_listener(self, listener: Callable[[str, BaseException | None], None]) -> None:
        """Be told "closed" when the connection closes (it is never lost)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str, BaseException | None], None]) -> None:
        """Stop telling ``listener`` (no error if it was not added)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def register(self, channel: MemoryAmqpChannel) -> None:
        """Track ``channel`` so that :meth:`close` closes it."""
        with self._lock:
            self._channels.append(channel)

    def unregister(self, channel: MemoryAmqpChannel) -> None:
        """Stop tracking ``channel``."""
        with self._lock:
            if channel in self._channels:
                self._channels.remove(channel)


class _Method:
    """What :class:`hutch._amqp.Delivery` reads of a delivery's method frame."""

    __slots__ = ("consumer_tag", "delivery_tag", "exchange", "redelivered", "routing_key")

    def __init__(self, d: MemoryDelivery) -> None:
        self.consumer_tag = d.consumer_tag
        self.delivery_tag = d.delivery_tag
        self.exchange = d.exchange
        self.routing_key = d.routing_key
        self.redelivered = d.redelivered


class _Consumer:
    """A consumer to start again on a new engine channel after a channel error."""

    __slots__ = ("arguments", "cancelled", "deliver", "exclusive", "queue")

    def __init__(
        self,
        queue: str,
        deliver: Callable[[int, MemoryDelivery], None],
        exclusive: bool,
        cancelled: Callable[[str], None] | None,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.queue = queue
        self.deliver = deliver
        self.exclusive = exclusive
        self.cancelled = cancelled
        self.arguments = dict(arguments) if arguments else None


class MemoryAmqpChannel:
    """The channel API of :class:`hutch._amqp.Channel` on the memory broker (internal).

    A broker channel error (a 404 on publish, an unknown delivery tag) closes the engine's
    channel as RabbitMQ closes its channel; the next operation opens a new one (a new
    *generation*: older deliveries' acks are dropped, their messages were requeued) and
    restores the consumers, as the pika channel does.
    """

    def __init__(self, driver: MemoryDriver, *, confirms: bool = False) -> None:
        self._driver = driver
        self.confirms = confirms
        self.generation = 0
        self._ch: MemoryChannel | None = None
        self._lock = threading.RLock()
        self._closed = False
        self._names: dict[int, str] = {}
        self._prefetch: int | None = None
        self._consumers: dict[str, _Consumer] = {}
        #: Called as ``on_return(reply_code, reply_text, properties)`` for a returned
        #: message that no confirm waits for (see :class:`hutch._amqp.Channel`).
        self.on_return: Callable[[int, str, Properties], None] | None = None

    # ----------------------------------------------------- the connection, as patterns see it
    def check_connection(self) -> None:
        """Raise if the connection was closed."""
        self._driver.check_usable()

    @property
    def connection_failure(self) -> HutchError | None:
        """Always None: the memory broker cannot fail."""
        return self._driver.failure

    @property
    def in_io_thread(self) -> bool:
        """True on the connection's callback thread."""
        return self._driver.in_io_thread

    def blocking_refused(self, what: str, instead: str) -> str | None:
        """Why ``what`` must not block here (the callback thread), else None."""
        return self._driver.blocking_refused(what, instead)

    @property
    def blocked(self) -> bool:
        """Always False: the memory broker has no resource alarms."""
        return False

    def wait_unblocked(self, timeout: float | None = None) -> None:
        """Return at once (never blocked)."""

    def pump(self, fut: Future[Any], limit: float) -> None:
        """Return at once: the callback thread does all I/O (callers then wait as usual).

        The pika channel returns early too whenever it cannot read the connection itself.
        """

    def pump_until(self, done: Callable[[], bool], limit: float, *, wait: float = 0.005) -> None:
        """Return at once (see :meth:`pump`)."""

    def wait_settled(self, fut: Future[R], timeout: float | None) -> R:
        """Wait for ``fut`` (raises ``concurrent.futures.TimeoutError`` after ``timeout``)."""
        return fut.result(timeout)

    @property
    def clock(self) -> Clock:
        """The broker's clock (see :class:`hutch._clock.Clock`)."""
        return self._driver.clock

    def is_current(self, delivery: Delivery) -> bool:
        """False once the engine channel that delivered ``delivery`` is gone."""
        ch = self._ch
        return delivery.generation == self.generation and ch is not None and not ch.closed

    # ----------------------------------------------------------------- the channel
    def open(self, timeout: float | None = 30.0) -> None:
        """Open the engine's channel."""
        self._driver.register(self)
        with self._lock:
            self._ensure_open()

    def close(self, timeout: float | None = 10.0) -> None:
        """Close the channel (idempotent)."""
        if self._closed:
            return
        self._driver.unregister(self)
        self.connection_closed()

    def connection_closed(self) -> None:
        """Close for good (no publish is ever left unconfirmed: see :meth:`_publish_now`)."""
        with self._lock:
            self._closed = True
            ch, self._ch = self._ch, None
        if ch is not None and not ch.closed:
            ch.close()

    def _ensure_open(self) -> MemoryChannel:
        ch = self._ch
        if ch is not None and not ch.closed:
            return ch
        if self._closed:
            raise ClosedError("the channel is closed")
        ch = self._driver.connection().channel()
        self.generation += 1
        self._ch = ch
        if self.confirms:
            ch.confirm_select(None)  # each publish's outcome is read at once (_publish_now)
        else:
            ch.on_return = self._on_return
        return ch

    def _run(self, op: Callable[[MemoryChannel], R]) -> R:
        with self._lock:
            before = self._ch
            ch = self._ensure_open()
            if before is not None and before is not ch and self._consumers:
                self._restore_consumers(ch)
            return op(ch)

    def declare(self, items: Iterable[TopologyItem], timeout: float | None = 30.0) -> None:
        """Declare exchanges, queues and bindings (in that order).

        Raises:
            PreconditionFailed: An entity exists with other settings.
            NotFound: A binding names an exchange that does not exist.
        """
        for item in ordered(items):
            self._run(lambda ch, item=item: self._declare_one(ch, item))  # type: ignore[misc]

    def _declare_one(self, ch: MemoryChannel, item: TopologyItem) -> None:
        if isinstance(item, Exchange):
            if item.is_default:
                return
            ch.exchange_declare(
                item.name,
                item.exchange_type.value,
                durable=item.durable,
                auto_delete=item.auto_delete,
                internal=item.internal,
                arguments=dict(item.arguments) or None,
            )
        elif isinstance(item, Queue):
            name, _, _ = ch.queue_declare(
                item.name,
                durable=bool(item.durable),
                exclusive=bool(item.exclusive),
                auto_delete=bool(item.auto_delete),
                arguments=item.arguments or None,
            )
            if item.server_named:
                self._names[id(item)] = name
        else:
            binding: Binding = item
            ch.queue_bind(
                self.queue_name(binding.queue),
                binding.exchange_name,
                binding.routing_key,
                binding.binding_arguments or None,
            )

    def queue_name(self, queue: Queue | str) -> str:
        """The broker's name for ``queue`` (server-named queues get theirs when declared)."""
        if isinstance(queue, str):
            return queue
        if queue.server_named:
            name = self._names.get(id(queue))
            if name is None:
                raise ValueError("this server-named queue has not been declared on this channel")
            return name
        return queue.name

    def qos(self, prefetch: int, timeout: float | None = 30.0) -> None:
        """Set the per-consumer prefetch count (``global=False``)."""
        self._prefetch = prefetch
        self._run(lambda ch: ch.basic_qos(prefetch))

    def consume(
        self,
        queue: Queue | str,
        on_message: Callable[[Delivery], None],
        *,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
        on_cancel: Callable[[str], None] | None = None,
        timeout: float | None = 30.0,
    ) -> str:
        """Start a consumer; ``on_message`` runs on the callback thread and must not block.

        Returns:
            The consumer tag.
        """
        name = self.queue_name(queue)

        def deliver(gen: int, d: MemoryDelivery) -> None:
            delivery = Delivery(self, gen, _Method(d), cast("Any", d.properties), d.body)
            try:
                on_message(delivery)
            except Exception:
                # as on the pika channel: a consumer's bug leaves the message unacked
                log.exception(
                    "hutch: the consumer of queue %r failed on delivery %d; left unacked",
                    name,
                    d.delivery_tag,
                )

        cancelled = None
        if on_cancel is not None:
            user_cancel = on_cancel

            def cancelled(tag: str) -> None:
                if self._consumers.pop(tag, None) is not None:
                    log.warning(
                        "hutch: broker cancelled the consumer of queue %r (queue deleted?)", name
                    )
                    user_cancel(name)

        consumer = _Consumer(name, deliver, exclusive, cancelled, arguments)
        return self._run(lambda ch: self._start(ch, consumer, ""))

    def _start(self, ch: MemoryChannel, consumer: _Consumer, tag: str) -> str:
        tag = ch.basic_consume(
            consumer.queue,
            functools.partial(consumer.deliver, self.generation),
            no_ack=consumer.queue == REPLY_TO,
            exclusive=consumer.exclusive,
            consumer_tag=tag,
            on_cancel=consumer.cancelled,
            arguments=consumer.arguments,
        )
        self._consumers[tag] = consumer
        return tag

    def _restore_consumers(self, ch: MemoryChannel) -> None:
        # a broker channel error closed the engine's channel: consumers go on on a new one
        if self._prefetch is not None:
            ch.basic_qos(self._prefetch)
        old, self._consumers = self._consumers, {}
        for tag, consumer in old.items():
            try:
                self._start(ch, consumer, tag)
            except ChannelClosed as exc:
                log.error("hutch: cannot restore the consumer of %r: %s", consumer.queue, exc)
                ch = self._ensure_open()
                if consumer.cancelled is not None:
                    consumer.cancelled(tag)

    def cancel(self, tag: str, timeout: float | None = 30.0) -> None:
        """Stop a consumer: no more deliveries; unacked ones stay ackable.

        Returns once the consumer has had every delivery sent before the cancel, as after
        RabbitMQ's ``basic.cancel-ok`` (a pool then knows its inbox is complete).
        """
        with self._lock:
            self._consumers.pop(tag, None)
            ch = self._ch
            if ch is None or ch.closed:
                return
            ch.basic_cancel(tag)
        # outside the lock: a delivery callback may need it
        ch.connection.caught_up(self.clock.deadline(timeout))

    # ----------------------------------------------------------------- publishing
    def _publish_now(self, m: OutgoingMessage) -> None:
        if m.done():
            return
        if self._closed:
            m.fail(ClosedError("the channel is closed"))
            return
        try:
            props = wire_copy(m.properties)
        except WIRE_ERRORS as exc:
            m.fail(
                PublishError(
                    f"the message cannot be encoded as AMQP: {type(exc).__name__}: {exc}",
                    exchange=m.exchange,
                    routing_key=m.routing_key,
                    message_id=m.message_id,
                )
            )
            return
        wire = WireProperties(*_VALUES(props))
        with self._lock:
            try:
                ch = self._ensure_open()
                seq = ch.basic_publish(
                    m.exchange, m.routing_key, m.body, wire, mandatory=m.mandatory
                )
            except (ChannelClosed, ClosedError) as exc:
                m.fail(exc)
                return
            # the broker has decided: the confirm is settled here, on the publishing thread,
            # not handed to the callback thread and back (two thread switches a message)
            acked, returned = (True, None) if seq is None else ch.last_publish
        m.confirmed(acked, returned)

    def publish(
        self, message: OutgoingMessage, *, direct: bool = False, wait: float = 1.0
    ) -> Future[None]:
        """Publish a message; the future resolves when it is confirmed."""
        self._publish_now(message)
        return message.future

    def publish_and_wait(
        self,
        message: OutgoingMessage,
        limit: float,
        *,
        until: Callable[[], bool] | None = None,
        wait: float = 1.0,
    ) -> None:
        """Publish a message; the caller then waits for its confirm as usual (see :meth:`pump`)."""
        self._publish_now(message)

    def publish_many(self, messages: list[OutgoingMessage], *, direct: bool = False) -> None:
        """Publish several messages; each settles its own future or its batch."""
        for m in messages:
            self._publish_now(m)

    def publish_then_ack(
        self,
        message: OutgoingMessage,
        delivery: Delivery,
        *,
        direct: bool = True,
        lead_until: Callable[[], bool] | None = None,
        lead_limit: float = 0.0,
    ) -> None:
        """Publish ``message``, then ack ``delivery`` (an RPC server's reply).

        ``lead_until`` is not waited for: the callback thread does all I/O (see
        :meth:`pump`).
        """
        self._publish_now(message)
        self.ack(delivery)

    def _on_return(self, returned: Returned) -> None:
        # runs on the callback thread (unconfirmed channels: confirmed ones see returns at once)
        if self.on_return is not None:
            props = returned.properties
            self.on_return(
                returned.reply_code,
                returned.reply_text,
                Properties(correlation_id=props.correlation_id, message_id=props.message_id),
            )

    # ----------------------------------------------------------------- acks, gets, admin
    def _settle(self, delivery: Delivery, *, ack: bool, requeue: bool) -> None:
        with self._lock:
            ch = self._ch
            if delivery.generation != self.generation or ch is None or ch.closed:
                log.debug("hutch: dropping the settlement of a delivery from a closed channel")
                return
            try:
                if ack:
                    ch.basic_ack(delivery.delivery_tag)
                else:
                    ch.basic_nack(delivery.delivery_tag, requeue=requeue)
            except ChannelClosed as exc:
                # asynchronous on RabbitMQ: the channel closes, consumers go on on a new one
                log.warning("hutch: broker closed channel: %s", exc)
                if self._consumers and not self._closed:
                    self._run(lambda _ch: None)

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a delivery (any thread)."""
        self._settle(delivery, ack=True, requeue=False)

    def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        """Reject a delivery: requeue it or let it be dead-lettered (any thread)."""
        self._settle(delivery, ack=False, requeue=requeue)

    def get(self, queue: Queue | str, timeout: float | None = 30.0) -> Delivery | None:
        """Fetch one message with ``basic.get`` (not acked; ack it yourself)."""
        name = self.queue_name(queue)
        with self._lock:
            d = self._run(lambda ch: ch.basic_get(name))
            if d is None:
                return None
            return Delivery(
                self,
                self.generation,
                _Method(d),
                cast("Any", d.properties),
                d.body,
            )

    def message_count(self, queue: str, timeout: float | None = 30.0) -> int:
        """Ready messages in a queue (passive declare)."""
        return self._run(lambda ch: ch.queue_declare(queue, passive=True))[1]

    def consumer_count(self, queue: str, timeout: float | None = 30.0) -> int:
        """Consumers of a queue (passive declare)."""
        return self._run(lambda ch: ch.queue_declare(queue, passive=True))[2]

    def exists(self, kind: str, name: str, timeout: float | None = 30.0) -> bool:
        """Whether an exchange or a queue exists (a passive declare)."""
        if kind not in ("exchange", "queue"):
            raise ValueError(f"kind must be 'exchange' or 'queue', not {kind!r}")
        try:
            if kind == "exchange":
                self._run(lambda ch: ch.exchange_declare(name, passive=True))
            else:
                self._run(lambda ch: ch.queue_declare(name, passive=True))
        except NotFound:
            return False
        return True

    def delete_queue(self, queue: str, timeout: float | None = 30.0) -> None:
        """Delete a queue."""
        self._run(lambda ch: ch.queue_delete(queue))

    def delete_exchange(self, exchange: str, timeout: float | None = 30.0) -> None:
        """Delete an exchange."""
        self._run(lambda ch: ch.exchange_delete(exchange))

    def purge(self, queue: str, timeout: float | None = 30.0) -> int:
        """Remove all ready messages from a queue; returns how many."""
        return self._run(lambda ch: ch.queue_purge(queue))


if TYPE_CHECKING:
    # mypy compares both backends with the protocol the patterns are typed against: a
    # method missing here, or with another signature, fails the type check
    def _serves_the_channel_api(memory: MemoryAmqpChannel, pika: Channel) -> list[ChannelApi]:
        return [memory, pika]
