"""The channel layer: one pika channel, used from any thread (see hutch._amqp.driver).

A :class:`Channel` remembers what it declared, its QoS, its consumers and its unconfirmed
publishes, so that after a reconnect it can re-create all of it on a new pika channel.
Delivery tags belong to one pika channel: each reopen starts a new *generation*, and acks
for deliveries of an older generation are dropped (the broker redelivers those messages).

Only the :mod:`hutch._amqp` package imports pika.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pika
import pika.channel
import pika.exceptions as pex
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from hutch._amqp.confirms import AckCoalescing, OutgoingMessage, Pending
from hutch._amqp.errors import map_pika_error
from hutch._amqp.pika_private import async_channel, publish
from hutch._amqp.properties import Delivery
from hutch._amqp.wire import WIRE_ERRORS
from hutch._clock import REAL_CLOCK, Clock
from hutch._exceptions import (
    ChannelClosed,
    ClosedError,
    ConnectionLost,
    HutchError,
    NotFound,
    PublishError,
)
from hutch._lifecycle import Lifecycle, LifecycleState
from hutch._message import Properties
from hutch._topology import Binding, Exchange, Queue, TopologyItem, ordered

if TYPE_CHECKING:
    from hutch._amqp.driver import Driver

__all__ = ["SEND_EVERY", "Channel"]

log = logging.getLogger("hutch")

R = TypeVar("R")


# how long a reply waits for the connection held briefly by another thread before it is
# queued for the I/O thread instead
_BRIEF = 0.002


# publish_many hands what it framed so far to the socket every this many messages
SEND_EVERY = 200


class _Consumer:
    __slots__ = ("arguments", "exclusive", "on_cancel", "on_message", "queue", "tag")

    def __init__(
        self,
        queue: Queue | str,
        on_message: Callable[[Delivery], None],
        exclusive: bool,
        arguments: Mapping[str, Any] | None,
        on_cancel: Callable[[str], None] | None,
        tag: str,
    ) -> None:
        self.queue = queue
        self.on_message = on_message
        self.exclusive = exclusive
        self.arguments = dict(arguments or {})
        self.on_cancel = on_cancel
        self.tag = tag


_tags = itertools.count(1)


class Channel(AckCoalescing):
    """One AMQP channel, usable from any thread (internal).

    Synchronous operations (declare, qos, consume) run while holding the connection (on the
    calling thread, or on the I/O thread while it recovers) and block the caller until the
    broker answered. ``ack`` only queues work for the I/O thread; ``publish`` sends on the
    calling thread (``direct``) or queues, and returns a future that resolves when the
    broker confirmed the message (or when it was written, on a channel without confirms).
    """

    def __init__(self, io: Driver, *, confirms: bool = False) -> None:
        self._io = io
        self.confirms = confirms
        self._ch: BlockingChannel | None = None
        self.generation = 0
        self._declared: list[TopologyItem] = []
        self._names: dict[int, str] = {}
        self._prefetch: int | None = None
        self._consumers: dict[str, _Consumer] = {}
        self._unconfirmed: OrderedDict[int, Pending] = OrderedDict()
        self._seq = 0
        # see _on_return: the highest delivery tag of a confirm so far, and the sequence
        # number of the publish the last return was matched to (both on this pika channel)
        self._confirmed_high = 0
        self._returned_seq = 0
        self._life = LifecycleState("the channel")
        self._retry_queue: list[OutgoingMessage] = []
        #: Called (driving the connection) as ``on_return(reply_code, reply_text, properties)`` for
        #: a returned message that no confirm waits for (mandatory publishes on a channel
        #: without confirms, e.g. RPC requests). Must not block.
        self.on_return: Callable[[int, str, Properties], None] | None = None
        # ack coalescing (connection holder only): manual-ack delivery tags in delivery order, acks
        # requested but not yet sent, and tags already settled on the wire one by one
        self._unacked: deque[int] = deque()
        self._acks_pending: set[int] = set()
        self._settled: set[int] = set()
        self._ack_flush_scheduled = False

    # ----------------------------------- the connection, as the patterns see it (any thread)
    def check_connection(self) -> None:
        """Raise if the connection was closed or failed for good.

        Raises:
            ClosedError: The connection was closed (or never opened).
            HutchError: The error that ended the connection (recovery gave up, say).
        """
        self._io.check_usable()

    @property
    def connection_failure(self) -> HutchError | None:
        """The error that ended the connection for good, if any."""
        return self._io.failure

    @property
    def in_io_thread(self) -> bool:
        """True when the calling thread drives the connection right now.

        Then it must not block waiting for the broker: only it could read the answer.
        """
        return self._io.in_io_thread

    def blocking_refused(self, what: str, instead: str) -> str | None:
        """Why ``what``, which waits for the broker, must not run here; None if it may.

        Args:
            what: The blocking call, e.g. ``"a confirmed publish"``.
            instead: What to do instead.

        Returns:
            The error message to raise, or None when the calling thread may block.
        """
        return self._io.blocking_refused(what, instead)

    @property
    def blocked(self) -> bool:
        """True while the broker blocks publishing (resource alarm)."""
        return self._io.blocked

    def wait_unblocked(self, timeout: float | None = None) -> None:
        """Wait while the broker blocks publishing.

        Args:
            timeout: Seconds to wait; None: the connection's ``publish_blocked_timeout``.

        Raises:
            ConnectionBlocked: Still blocked after ``timeout`` seconds.
        """
        io = self._io
        if io._unblocked.is_set():  # the common case, on every publish: no further call
            return
        io.wait_unblocked(io.settings.publish_blocked_timeout if timeout is None else timeout)

    @property
    def clock(self) -> Clock:
        """Real time: RabbitMQ's connections wait on ``time.monotonic()``."""
        return REAL_CLOCK

    # ------------------------------------ waiting for the broker's answer on this thread
    def pump(self, fut: Future[Any], limit: float) -> None:
        """Do the connection's I/O on the calling thread until ``fut`` is done (best effort).

        Returns early, leaving the rest to the I/O thread, when another thread pumps
        already, another caller needs the connection, ``limit`` seconds passed or the
        connection is in trouble; callers then wait for ``fut`` as usual.
        """
        self._io.pump_until(fut.done, limit)

    def pump_until(self, done: Callable[[], bool], limit: float, *, wait: float = 0.005) -> None:
        """:meth:`pump` until ``done()`` is true (checked after each round of I/O).

        Args:
            done: The condition to pump for.
            limit: Seconds at most.
            wait: How long to wait for the connection when another thread (not pumping)
                holds it; 0 to pump only if it is free.
        """
        self._io.pump_until(done, limit, wait=wait)

    def wait_settled(self, fut: Future[R], timeout: float | None) -> R:
        """Wait for a future the connection resolves, not counting time spent recovering.

        Args:
            fut: A publish's or a batch's future.
            timeout: Seconds of connected time; None: no limit.

        Returns:
            The future's result.

        Raises:
            concurrent.futures.TimeoutError: ``timeout`` seconds of connected time passed.
            ConnectionBlocked: The broker has blocked publishing for too long.
        """
        return self._io.wait_settled(fut, timeout)

    def is_current(self, delivery: Delivery) -> bool:
        """False once the pika channel that delivered ``delivery`` is gone (any thread).

        Its ack would be dropped and the broker redelivers the message, so a consumer may
        skip it instead of handling it twice.
        """
        return delivery.generation == self.generation and self._ch is not None

    def open(self, timeout: float | None = 30.0) -> None:
        """Open the pika channel and start tracking it for recovery."""
        self._io.register(self)
        self._call(self._ensure_open, timeout)
        if not self._life.closed:  # the connection may have closed meanwhile
            self._life.move(Lifecycle.OPEN)

    def close(self, timeout: float | None = 10.0) -> None:
        """Close the channel (idempotent); unconfirmed publishes fail with ClosedError."""
        if not self._life.move(Lifecycle.CLOSING):
            return
        self._io.unregister(self)
        if self._io.is_open:
            try:
                self._io.call(self._close_now, timeout)
            except HutchError:
                pass
        self._life.move(Lifecycle.CLOSED)

    def _closed_error(self) -> HutchError:
        # what a publish on a closed channel fails with
        return self._io.failure or ClosedError("the channel is closed")

    def _call(self, fn: Callable[[], Any], timeout: float | None) -> Any:
        if self._life.closed:
            raise ClosedError("the channel is closed")
        return self._io.call(fn, timeout)

    def declare(self, items: Iterable[TopologyItem], timeout: float | None = 30.0) -> None:
        """Declare exchanges, queues and bindings (in that order) and remember them.

        Raises:
            PreconditionFailed: An entity exists with other settings (names both).
            NotFound: A binding names an exchange that does not exist.
        """
        todo = ordered(items)

        def run() -> None:
            ch = self._ensure_open()
            for item in todo:
                self._declare_one(ch, item)
                if not any(item is d for d in self._declared):
                    self._declared.append(item)

        self._call(run, timeout)

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
        """Set the per-consumer prefetch count (``basic.qos`` with ``global=False``)."""

        def run() -> None:
            self._prefetch = prefetch
            self._ensure_open().basic_qos(prefetch_count=prefetch, global_qos=False)

        self._call(run, timeout)

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
        """Start a consumer; ``on_message`` runs inside pika's dispatch and must not block.

        Returns:
            The consumer tag.
        """
        consumer = _Consumer(
            queue,
            on_message,
            exclusive,
            arguments,
            on_cancel,
            f"hutch.{self._io.name}.{next(_tags)}",
        )

        def run() -> str:
            self._start_consumer(self._ensure_open(), consumer)
            self._consumers[consumer.tag] = consumer
            return consumer.tag

        return self._call(run, timeout)  # type: ignore[no-any-return]

    def cancel(self, tag: str, timeout: float | None = 30.0) -> None:
        """Stop a consumer: no more deliveries; unacked ones stay ackable."""

        def run() -> None:
            self._consumers.pop(tag, None)
            ch = self._ch
            if ch is not None and ch.is_open:
                ch.basic_cancel(tag)

        self._call(run, timeout)

    def publish(
        self, message: OutgoingMessage, *, direct: bool = False, wait: float = 1.0
    ) -> Future[None]:
        """Publish a message; the future resolves when it is confirmed.

        With ``direct``, the calling thread sends it itself when it can take the connection
        within ``wait`` seconds (see :meth:`Driver.run_direct`); otherwise the message is
        queued for the I/O thread.
        """
        if self._life.closed:
            message.fail(self._closed_error())
            return message.future
        if direct and self._io.run_direct(lambda: self._publish_now(message, now=True), wait):
            return message.future
        self._io.submit(lambda: self._publish_now(message))
        return message.future

    def publish_and_wait(
        self,
        message: OutgoingMessage,
        limit: float,
        *,
        until: Callable[[], bool] | None = None,
        wait: float = 1.0,
    ) -> None:
        """Publish a message, then do this connection's I/O on this thread for a while.

        That is, for up to ``limit`` seconds until ``until()`` (default: the message is
        settled, i.e. confirmed) is true. The message may still be pending afterwards (a
        slow answer, or the connection could not be taken within ``wait`` seconds and the
        message was queued for the I/O thread): callers wait for its future as usual.
        """
        if self._life.closed:
            message.fail(self._closed_error())
            return
        if not self._io.run_and_pump(
            lambda: self._publish_now(message, now=True), until or message.done, limit, wait
        ):
            self._io.submit(lambda: self._publish_now(message))

    def publish_many(self, messages: list[OutgoingMessage], *, direct: bool = False) -> None:
        """Publish several messages at once (one hand-over to the I/O thread at most).

        Each settles its own future or its batch (see :class:`OutgoingMessage`).
        """
        if self._life.closed:
            error = self._closed_error()
            for m in messages:
                m.fail(error)
            return

        def run() -> None:
            for i, m in enumerate(messages, 1):
                self._publish_now(m)
                if i % SEND_EVERY == 0:
                    # let the broker start on the batch while the rest is still being
                    # framed, and take in the confirms that came back meanwhile
                    self._io.send_pending()

        if not (direct and self._io.run_direct(run)):
            self._io.submit(run)

    def publish_then_ack(
        self,
        message: OutgoingMessage,
        delivery: Delivery,
        *,
        direct: bool = True,
        lead_until: Callable[[], bool] | None = None,
        lead_limit: float = 0.0,
    ) -> None:
        """Publish ``message`` (no waiting), then ack ``delivery``: an RPC server's reply.

        With ``direct``, the calling thread sends both itself when the connection is free
        (the quickest reply); otherwise both are queued for the I/O thread, in that order
        (which sends the replies of busy moments in batches: more replies per second).
        With ``lead_until`` as well, the calling thread sends both, then goes on reading the
        connection in the same hold of it until ``lead_until()`` is true or ``lead_limit``
        seconds passed (an idle server's worker waiting for its next request).
        """
        gen, tag = delivery.generation, delivery.delivery_tag

        def run() -> None:
            # the reply first, then the ack, each straight to the socket when pika holds no
            # output (else queued in that order and sent together)
            self._publish_now(message, now=True)
            if gen == self.generation and self._ch is not None:
                self._acks_pending.add(tag)
                self._flush_acks(now=True)

        if self._life.closed:
            message.fail(self._closed_error())
            self.ack(delivery)
            return
        if direct:
            wait = 0 if self._io.pumping else _BRIEF
            if lead_until is None:
                if self._io.run_direct(run, wait):
                    return
            elif self._io.run_and_pump(run, lead_until, lead_limit, wait):
                return
        # a pumping thread (waiting for something else) sends it as soon as it is queued
        self._io.submit(lambda: self._publish_now(message))
        self.ack(delivery)

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a delivery (thread-safe, asynchronous).

        Acks that reach the I/O thread together are coalesced into one ``basic.ack`` with
        ``multiple=True`` when every earlier delivery on the channel is settled too.
        """
        gen, tag = delivery.generation, delivery.delivery_tag
        self._io.submit(lambda: self._queue_ack(gen, tag))

    def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        """Reject a delivery: requeue it or let it be dead-lettered (thread-safe)."""
        gen, tag = delivery.generation, delivery.delivery_tag
        self._io.submit(lambda: self._settle(gen, tag, ack=False, requeue=requeue))

    def get(self, queue: Queue | str, timeout: float | None = 30.0) -> Delivery | None:
        """Fetch one message with ``basic.get`` (not acked; ack it yourself)."""

        def run() -> Delivery | None:
            ch = self._ensure_open()
            method, props, body = ch.basic_get(self.queue_name(queue), auto_ack=False)
            if method is None:
                return None
            self._unacked.append(cast(int, method.delivery_tag))
            return Delivery(self, self.generation, method, cast("Any", props), cast(bytes, body))

        return self._call(run, timeout)  # type: ignore[no-any-return]

    def message_count(self, queue: str, timeout: float | None = 30.0) -> int:
        """Ready messages in a queue (passive declare)."""

        def run() -> int:
            ok = self._run_sync(
                lambda ch: ch.queue_declare(queue, passive=True), f"queue {queue!r}"
            )
            return int(ok.method.message_count)

        return self._call(run, timeout)  # type: ignore[no-any-return]

    def consumer_count(self, queue: str, timeout: float | None = 30.0) -> int:
        """Consumers of a queue (passive declare).

        A classic queue counts its waiting single-active consumers too; a quorum queue
        (RabbitMQ 3.10) counts only the active one.
        """

        def run() -> int:
            ok = self._run_sync(
                lambda ch: ch.queue_declare(queue, passive=True), f"queue {queue!r}"
            )
            return int(ok.method.consumer_count)

        return self._call(run, timeout)  # type: ignore[no-any-return]

    def exists(self, kind: str, name: str, timeout: float | None = 30.0) -> bool:
        """Whether an exchange or a queue exists (a passive declare; used by tools).

        A miss closes the pika channel (404); the next operation opens another one.

        Args:
            kind: ``"exchange"`` or ``"queue"``.
            name: Its name.
            timeout: Seconds to wait for the broker.
        """
        if kind not in ("exchange", "queue"):
            raise ValueError(f"kind must be 'exchange' or 'queue', not {kind!r}")

        def op(ch: BlockingChannel) -> Any:
            if kind == "exchange":
                return ch.exchange_declare(name, passive=True)
            return ch.queue_declare(name, passive=True)

        try:
            self._call(lambda: self._run_sync(op, f"{kind} {name!r}"), timeout)
        except NotFound:
            return False
        return True

    def delete_queue(self, queue: str, timeout: float | None = 30.0) -> None:
        """Delete a queue (used by tests and tools)."""
        self._call(
            lambda: self._run_sync(lambda ch: ch.queue_delete(queue), f"queue {queue!r}"), timeout
        )

    def delete_exchange(self, exchange: str, timeout: float | None = 30.0) -> None:
        """Delete an exchange (used by tests and tools)."""
        self._call(
            lambda: self._run_sync(
                lambda ch: ch.exchange_delete(exchange), f"exchange {exchange!r}"
            ),
            timeout,
        )

    def purge(self, queue: str, timeout: float | None = 30.0) -> int:
        """Remove all ready messages from a queue; returns how many."""

        def run() -> int:
            ok = self._run_sync(lambda ch: ch.queue_purge(queue), f"queue {queue!r}")
            return int(ok.method.message_count)

        return self._call(run, timeout)  # type: ignore[no-any-return]

    # -------------------------------------------- only while holding the connection
    def _ensure_open(self) -> BlockingChannel:
        ch = self._ch
        if ch is not None and ch.is_open:
            return ch
        if self._life.closed:
            raise ClosedError("the channel is closed")
        conn = self._io.pika_connection()
        ch = conn.channel()
        self.generation += 1
        self._unacked = deque()
        self._acks_pending = set()
        self._settled = set()
        self._ch = ch
        impl = async_channel(ch)
        impl.add_on_close_callback(self._on_pika_channel_closed)
        impl.add_on_return_callback(self._on_return)
        ch.add_on_cancel_callback(self._on_broker_cancel)
        self._seq = 0
        self._confirmed_high = 0
        self._returned_seq = 0
        self._nack_streak = 0
        if self.confirms:
            # No need to wait for Confirm.SelectOk: the broker handles frames in order, so
            # every publish after this one is confirmed (delivery tags start at 1).
            impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _f: None)
        return ch

    def _run_sync(self, op: Callable[[BlockingChannel], Any], entity: str) -> Any:
        ch = self._ensure_open()
        try:
            return op(ch)
        except pex.ChannelClosed as exc:
            raise map_pika_error(exc, entity=entity) from exc

    def _declare_one(self, ch: BlockingChannel, item: TopologyItem) -> None:
        if isinstance(item, Exchange):
            if item.is_default:
                return
            self._run_sync(
                lambda c: c.exchange_declare(
                    item.name,
                    exchange_type=item.exchange_type.value,
                    durable=item.durable,
                    auto_delete=item.auto_delete,
                    internal=item.internal,
                    arguments=dict(item.arguments) or None,
                ),
                f"exchange {item.name!r}",
            )
        elif isinstance(item, Queue):
            ok = self._run_sync(
                lambda c: c.queue_declare(
                    item.name,
                    durable=bool(item.durable),
                    exclusive=bool(item.exclusive),
                    auto_delete=bool(item.auto_delete),
                    arguments=item.arguments or None,
                ),
                item.describe(),
            )
            if item.server_named:
                self._names[id(item)] = ok.method.queue
        else:
            binding: Binding = item
            queue = self.queue_name(binding.queue)
            self._run_sync(
                lambda c: c.queue_bind(
                    queue,
                    binding.exchange_name,
                    routing_key=binding.routing_key,
                    arguments=binding.binding_arguments or None,
                ),
                f"binding of queue {queue!r} to exchange {binding.exchange_name!r}",
            )

    def _start_consumer(self, ch: BlockingChannel, consumer: _Consumer) -> None:
        gen = self.generation
        on_message = consumer.on_message
        queue = self.queue_name(consumer.queue)
        auto_ack = queue == "amq.rabbitmq.reply-to"
        unacked = self._unacked

        def deliver(
            _ch: BlockingChannel, method: Any, props: pika.BasicProperties, body: bytes
        ) -> None:
            if not auto_ack:
                unacked.append(method.delivery_tag)
            try:
                on_message(Delivery(self, gen, method, props, body))
            except Exception:
                # runs while driving the connection: a consumer's bug must not take the
                # connection (and everyone on it) down; the message stays unacked, and the
                # broker redelivers it once the channel closes
                log.exception(
                    "hutch: the consumer of queue %r failed on delivery %d; left unacked",
                    queue,
                    method.delivery_tag,
                )

        self._run_sync(
            lambda c: c.basic_consume(
                queue,
                deliver,
                auto_ack=auto_ack,
                exclusive=consumer.exclusive,
                consumer_tag=consumer.tag,
                arguments=consumer.arguments or None,
            ),
            f"queue {queue!r}",
        )

    def _publish_now(self, m: OutgoingMessage, *, now: bool = False) -> None:
        # now: straight to the socket (a caller waits for the answer); see pika_private.publish
        if m.done():
            return
        if self._life.closed and (self._ch is None or not self._ch.is_open):
            # publishes queued before close() still go out: the close task runs after them
            m.fail(ClosedError("the channel is closed"))
            return
        try:
            ch = self._ensure_open()
            impl = async_channel(ch)
            publish(impl, m.exchange, m.routing_key, m.body, m.properties, m.mandatory, now=now)
        except (pex.AMQPConnectionError, pex.ConnectionWrongStateError, ConnectionLost):
            # connection is going down: keep it for republishing after recovery
            if self.confirms:
                self._retry_queue.append(m)
            else:
                m.fail(ConnectionLost("connection lost before the message was sent"))
            return
        except (pex.ChannelClosed, pex.ChannelWrongStateError) as exc:
            m.fail(map_pika_error(exc))
            return
        except WIRE_ERRORS as exc:
            # pika could not encode it (a header value AMQP has no type for, an int past
            # 64 bits: struct.error): nothing was sent, and the channel is fine
            m.fail(
                PublishError(
                    f"the message cannot be encoded as AMQP: {type(exc).__name__}: {exc}",
                    exchange=m.exchange,
                    routing_key=m.routing_key,
                    message_id=m.message_id,
                )
            )
            return
        if self.confirms:
            self._seq += 1
            self._unconfirmed[self._seq] = Pending(m, self._seq)
        else:
            m.succeed()

    def _on_broker_cancel(self, frame: Any) -> None:
        tag = frame.method.consumer_tag
        consumer = self._consumers.pop(tag, None)
        if consumer is None:
            return
        queue = consumer.queue if isinstance(consumer.queue, str) else consumer.queue.name
        log.warning("hutch: broker cancelled the consumer of queue %r (queue deleted?)", queue)
        if consumer.on_cancel is not None:
            consumer.on_cancel(queue)

    def _on_pika_channel_closed(self, _ch: Any, reason: BaseException) -> None:
        if isinstance(reason, pex.ChannelClosedByBroker):
            error = map_pika_error(reason)
            if self._consumers or self._unconfirmed:
                log.warning("hutch: broker closed channel: %s", error)
            else:
                # nothing in flight: the synchronous caller gets the error raised (e.g. a
                # passive declare of a queue that does not exist yet, polled while waiting)
                log.debug("hutch: broker closed channel: %s", error)
            self._fail_unconfirmed(error)
            self._ch = None
            if self._consumers and not self._life.closed:
                # an asynchronous channel error (e.g. a bad ack) must not silently end
                # consumption: reopen and restore the consumers
                self._io.submit(self._restore_consumers_after_channel_error)

    def _restore_consumers_after_channel_error(self) -> None:
        if self._ch is not None or self._life.closed:
            return
        try:
            ch = self._ensure_open()
            if self._prefetch is not None:
                ch.basic_qos(prefetch_count=self._prefetch, global_qos=False)
            for consumer in list(self._consumers.values()):
                self._start_consumer(ch, consumer)
        except (ChannelClosed, pex.ChannelClosed) as exc:
            log.error("hutch: cannot restore consumers after a channel error: %s", exc)
            for consumer in list(self._consumers.values()):
                self._consumers.pop(consumer.tag, None)
                if consumer.on_cancel is not None:
                    consumer.on_cancel(self.queue_name(consumer.queue))

    def _close_now(self) -> None:
        if self._acks_pending:
            # acks requested before the close must reach the broker before it: their
            # coalesced flush may still be queued behind this task
            self._flush_acks()
        self._fail_unconfirmed(ClosedError("the channel was closed before the broker confirmed"))
        ch, self._ch = self._ch, None
        if ch is not None and ch.is_open:
            try:
                ch.close()
            except (pex.AMQPError, OSError):
                pass

    # called by the Driver
    def on_connection_lost(self) -> None:
        """The connection died: keep unconfirmed publishes for republishing."""
        self._ch = None
        for seq in list(self._unconfirmed):
            self._retry_queue.append(self._unconfirmed.pop(seq).message)

    def restore(self) -> None:
        """Re-create the channel after a reconnect: topology, QoS, consumers, republish."""
        if self._life.closed:
            return
        ch = self._ensure_open()
        for item in self._declared:
            try:
                self._declare_one(self._ensure_open(), item)
            except ChannelClosed as exc:
                log.error("hutch: cannot redeclare %r after reconnect: %s", item, exc)
        ch = self._ensure_open()
        if self._prefetch is not None:
            ch.basic_qos(prefetch_count=self._prefetch, global_qos=False)
        for consumer in list(self._consumers.values()):
            try:
                self._start_consumer(self._ensure_open(), consumer)
            except ChannelClosed as exc:
                log.error("hutch: cannot restore consumer of %r: %s", consumer.queue, exc)
                self._consumers.pop(consumer.tag, None)
                if consumer.on_cancel is not None:
                    consumer.on_cancel(self.queue_name(consumer.queue))
        retry, self._retry_queue = self._retry_queue, []
        if retry:
            log.info("hutch: republishing %d unconfirmed messages after reconnect", len(retry))
        for m in retry:
            self._publish_now(m)

    def on_connection_closed(self, reason: BaseException, *, graceful: bool) -> None:
        """The connection is closing for good: fail whatever is still pending."""
        if graceful and self._ch is not None:
            self._close_now()
        self._fail_unconfirmed(reason)
        retry, self._retry_queue = self._retry_queue, []
        for m in retry:
            m.fail(reason)
        self._ch = None
        self._life.move(Lifecycle.CLOSED)
