"""Connections and channels of the memory broker, and the thread that runs callbacks.

A :class:`MemoryConnection` owns an outbox of callbacks (deliveries, returns, confirms,
consumer cancellations) that the broker fills under its lock; the connection's own thread
runs them in order, never under the broker's lock, so a callback may call back into the
broker (ack, publish). With ``threaded=False`` nothing runs until :meth:`run_pending`,
which makes unit tests deterministic.

States of a channel: open -> closed (by :meth:`MemoryChannel.close`, by its connection
closing, or by the broker on a channel error, which is then kept in ``close_reason``).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hutch._clock import Mailbox, join_thread
from hutch._exceptions import ChannelClosed, ClosedError
from hutch._memory.message import Delivery, Properties
from hutch._topology import ExchangeType

if TYPE_CHECKING:
    from hutch._memory.broker import Broker, Returned, Unacked, Vhost
    from hutch._memory.consumers import Consumer

__all__ = ["MemoryChannel", "MemoryConnection"]

log = logging.getLogger("hutch")

_Callback = Callable[[], None]


class MemoryConnection:
    """A connection to a memory broker's vhost. Any thread may call it.

    Args:
        broker: The broker.
        vhost: Its vhost.
        threaded: Run callbacks on this connection's thread (else see :meth:`run_pending`).
    """

    def __init__(self, broker: Broker, vhost: Vhost, *, threaded: bool = True) -> None:
        self.broker = broker
        self.vhost = vhost
        self.channels: list[MemoryChannel] = []
        self._numbers = itertools.count(1)
        self._outbox: Mailbox[_Callback | None] = Mailbox()
        self._threaded = threaded
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0
        self.closed = False

    def __enter__(self) -> MemoryConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def channel(self) -> MemoryChannel:
        """Open a channel.

        Raises:
            ClosedError: The connection is closed.
        """
        self.broker.clock.enter()
        with self.broker._lock:
            if self.closed:
                raise ClosedError("the memory connection is closed")
            ch = MemoryChannel(self, next(self._numbers))
            self.channels.append(ch)
            return ch

    def close(self) -> None:
        """Close the channels, delete the exclusive queues, stop the thread. Idempotent."""
        with self.broker._lock:
            if self.closed:
                return
            self.broker.close_connection(self)
            self.closed = True
        self._outbox.put(None)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            join_thread(thread, 5.0)

    # ---------------------------------------------------------------- callbacks
    def emit(self, callback: _Callback) -> None:
        """Queue a callback (the broker calls this under its lock; it never blocks)."""
        with self._idle:
            self._pending += 1
        self._outbox.put(callback)
        self.broker.clock.touch()
        if self._threaded and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="hutch-memory-connection", daemon=True
            )
            self._thread.start()

    def caught_up(self, deadline: float | None) -> bool:
        """Wait until every callback queued before this call has run (deliveries included).

        On a real connection a method's reply comes after the deliveries the broker sent
        before it, so once a ``basic.cancel`` returns its consumer has had every message it
        was sent. Returns at once on the callback thread itself (a callback that waited for
        itself would never return), before any callback, and once the connection is closed.

        Returns:
            False if ``deadline`` passed first.
        """
        done = threading.Event()
        with self.broker._lock:  # emit's thread start is only safe under the broker's lock
            thread = self._thread
            if self.closed or thread is None or thread is threading.current_thread():
                return True
            self.emit(done.set)
        return self.broker.clock.wait(
            lambda: done.is_set() or self.closed, done.wait, deadline, wake=done.set
        )

    def _call(self, callback: _Callback) -> None:
        try:
            callback()
        except Exception:  # a user's callback failed: keep serving the others
            log.debug("memory broker callback failed", exc_info=True)
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _run(self) -> None:
        clock = self.broker.clock
        clock.enter()
        while True:
            callback = self._outbox.get(clock, None)
            if callback is None:
                return
            self._call(callback)

    def run_pending(self) -> int:
        """Run the queued callbacks on this thread (``threaded=False``); return how many."""
        done = 0
        while True:
            try:
                callback = self._outbox.get_nowait()
            except IndexError:
                return done
            if callback is not None:
                self._call(callback)
                done += 1

    @property
    def pending(self) -> int:
        """Callbacks queued or running (0: this connection has caught up with the broker)."""
        return self._pending

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every queued callback has run; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)


class MemoryChannel:
    """A channel: AMQP's methods on a memory broker. Any thread may call it.

    Attributes:
        number: Its channel number.
        on_return: Called with a :class:`~hutch._memory.broker.Returned` message.
        on_confirm: In confirm mode, called with (sequence number, acked).
        last_publish: In confirm mode, the outcome of the channel's last publish, which
            the broker decides at once: (acked, (reply code, text) if it was returned).
    """

    def __init__(self, connection: MemoryConnection, number: int) -> None:
        self.connection = connection
        self.broker = connection.broker
        self.vhost = connection.vhost
        self.number = number
        self.consumers: dict[str, Consumer] = {}
        self.unacked: dict[int, Unacked] = {}
        self.consumer_prefetch = 0
        self.global_prefetch = 0
        #: basic.get's unacked messages when the global prefetch was set: they count
        #: against it from then on, acked or not, as in RabbitMQ 3.10
        self.global_phantom = 0
        self.reply_token: str | None = None
        self.on_return: Callable[[Returned], None] | None = None
        self.on_confirm: Callable[[int, bool], None] | None = None
        self.last_publish: tuple[bool, tuple[int, str] | None] = (True, None)
        self._delivery_tags = itertools.count(1)
        self._publish_seq: itertools.count[int] | None = None
        self.closed = False
        self.close_reason: ChannelClosed | None = None

    # ---------------------------------------------------------------- state
    def check_open(self) -> None:
        """Raise if the channel is closed (the broker's error, if it closed it)."""
        if self.closed:
            if self.close_reason is not None:
                raise ClosedError(f"the channel was closed by the broker: {self.close_reason}")
            raise ClosedError("the channel is closed")

    def mark_closed(self, reason: ChannelClosed | None) -> None:
        """Record the channel as closed (by the broker, under its lock)."""
        self.closed = True
        self.close_reason = reason
        if self in self.connection.channels:
            self.connection.channels.remove(self)

    def has_room(self) -> bool:
        """True if the channel's global prefetch allows one more delivery."""
        if not self.global_prefetch:
            return True
        pending = sum(1 for u in self.unacked.values() if u.consumer is not None)
        return pending + self.global_phantom < self.global_prefetch

    def next_delivery_tag(self) -> int:
        """The next delivery tag (under the broker's lock)."""
        return next(self._delivery_tags)

    def next_publish_seq(self) -> int | None:
        """The next publish sequence number in confirm mode, else None."""
        return None if self._publish_seq is None else next(self._publish_seq)

    def close(self) -> None:
        """Close the channel: its consumers are cancelled, its unacked messages requeued."""
        self.broker.close_channel(self)

    # ---------------------------------------------------------------- AMQP methods
    def confirm_select(self, on_confirm: Callable[[int, bool], None] | None) -> None:
        """Put the channel in confirm mode; ``on_confirm(seq, acked)`` follows each publish.

        None: no callback; the publisher reads each outcome from :attr:`last_publish`.
        """
        with self.broker._lock:
            self.check_open()
            self.on_confirm = on_confirm
            if self._publish_seq is None:
                self._publish_seq = itertools.count(1)

    def exchange_declare(
        self,
        name: str,
        type: ExchangeType | str = ExchangeType.DIRECT,
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """``exchange.declare``."""
        self.broker.exchange_declare(
            self,
            name,
            type,
            passive=passive,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=arguments,
        )

    def exchange_delete(self, name: str, *, if_unused: bool = False) -> None:
        """``exchange.delete``."""
        self.broker.exchange_delete(self, name, if_unused=if_unused)

    def queue_declare(
        self,
        name: str = "",
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> tuple[str, int, int]:
        """``queue.declare``: returns (name, ready messages, consumers)."""
        return self.broker.queue_declare(
            self,
            name,
            passive=passive,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=arguments,
        )

    def queue_delete(self, name: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """``queue.delete``: returns the ready messages it held."""
        return self.broker.queue_delete(self, name, if_unused=if_unused, if_empty=if_empty)

    def queue_purge(self, name: str) -> int:
        """``queue.purge``: returns the ready messages removed."""
        return self.broker.queue_purge(self, name)

    def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """``queue.bind``."""
        self.broker.bind(self, queue, exchange, routing_key, arguments)

    def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """``queue.unbind`` (idempotent)."""
        self.broker.bind(self, queue, exchange, routing_key, arguments, unbind=True)

    def exchange_bind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """``exchange.bind``."""
        self.broker.bind(self, destination, source, routing_key, arguments, to_exchange=True)

    def exchange_unbind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """``exchange.unbind`` (idempotent)."""
        self.broker.bind(
            self, destination, source, routing_key, arguments, to_exchange=True, unbind=True
        )

    def basic_qos(self, prefetch_count: int, *, global_: bool = False) -> None:
        """``basic.qos`` (prefetch count only; size is not supported by RabbitMQ either)."""
        self.broker.qos(self, prefetch_count, global_=global_)

    def basic_publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties | None = None,
        *,
        mandatory: bool = False,
    ) -> int | None:
        """``basic.publish``: returns the sequence number in confirm mode."""
        return self.broker.publish(
            self, exchange, routing_key, body, properties, mandatory=mandatory
        )

    def basic_consume(
        self,
        queue: str,
        on_message: Callable[[Delivery], None],
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        consumer_tag: str = "",
        on_cancel: Callable[[str], None] | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> str:
        """``basic.consume``: returns the consumer tag."""
        return self.broker.consume(
            self,
            queue,
            on_message,
            no_ack=no_ack,
            exclusive=exclusive,
            consumer_tag=consumer_tag,
            on_cancel=on_cancel,
            arguments=arguments,
        )

    def basic_cancel(self, consumer_tag: str) -> None:
        """``basic.cancel``."""
        self.broker.cancel(self, consumer_tag)

    def basic_get(self, queue: str, *, no_ack: bool = False) -> Delivery | None:
        """``basic.get``: the next message or None."""
        return self.broker.get(self, queue, no_ack=no_ack)

    def basic_ack(self, delivery_tag: int, *, multiple: bool = False) -> None:
        """``basic.ack``."""
        self.broker.settle(self, delivery_tag, multiple=multiple, ack=True, requeue=False)

    def basic_nack(
        self, delivery_tag: int, *, multiple: bool = False, requeue: bool = True
    ) -> None:
        """``basic.nack``."""
        self.broker.settle(self, delivery_tag, multiple=multiple, ack=False, requeue=requeue)

    def basic_reject(self, delivery_tag: int, *, requeue: bool = True) -> None:
        """``basic.reject``."""
        self.broker.settle(self, delivery_tag, multiple=False, ack=False, requeue=requeue)

    def basic_recover(self) -> None:
        """``basic.recover(requeue=True)``."""
        self.broker.recover(self)
