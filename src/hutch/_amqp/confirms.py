"""Publishes in flight: messages, batches, confirms and returns; acks coalesced."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import pika
import pika.channel
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from hutch._amqp.pika_private import ack, async_channel
from hutch._amqp.properties import from_pika_properties
from hutch._amqp.stuck import NackStreaks
from hutch._exceptions import (
    Nacked,
    Unroutable,
)
from hutch._message import Properties

if TYPE_CHECKING:
    from hutch._amqp.driver import Driver

__all__ = ["AckCoalescing", "Batch", "ConfirmTracking", "OutgoingMessage", "Pending"]

log = logging.getLogger("hutch")


class Batch:
    """Settles the messages of one ``publish_many`` together (internal).

    One future for the whole batch instead of one per message: a batch of thousands
    settles with one wake-up, and no per-message future to create and resolve.
    """

    __slots__ = ("_cond", "_left", "_low", "_sealed", "errors", "future")

    def __init__(self, size: int = 0, *, sealed: bool = True) -> None:
        self._left = size
        self._sealed = False
        self._low: int | None = None
        self._cond = threading.Condition(threading.Lock())
        #: index -> why that message was not confirmed
        self.errors: dict[int, BaseException] = {}
        #: resolves once the batch is sealed and every message in it settled
        self.future: Future[None] = Future()
        if sealed:
            self.seal()

    @property
    def unsettled(self) -> int:
        """Messages added but not settled yet."""
        return self._left

    def add(self, count: int = 1) -> None:
        """Count ``count`` more messages in (before publishing them)."""
        with self._cond:
            if self._sealed:
                raise RuntimeError("the batch is sealed")
            self._left += count

    def seal(self) -> None:
        """No more messages: the future resolves once those added are settled."""
        with self._cond:
            self._sealed = True
            done = self._left == 0
        if done and not self.future.done():
            self.future.set_result(None)

    def wait_below(self, count: int, timeout: float) -> bool:
        """Wait until fewer than ``count`` messages are unsettled (any thread)."""
        with self._cond:
            self._low = count
            try:
                return self._cond.wait_for(lambda: self._left < count, timeout)
            finally:
                self._low = None

    def settle(self, index: int, error: BaseException | None) -> None:
        with self._cond:
            if error is not None:
                self.errors[index] = error
            self._left -= 1
            last = self._left == 0 and self._sealed
            if self._low is not None and self._left < self._low:
                self._cond.notify_all()
        if last:
            self.future.set_result(None)


class OutgoingMessage:
    """A message to publish (internal).

    It settles either its own :attr:`future` or, as part of a :class:`Batch`, the batch.
    """

    __slots__ = (
        "_batch",
        "_future",
        "_index",
        "_on_fail",
        "_settled",
        "body",
        "exchange",
        "mandatory",
        "message_id",
        "properties",
        "routing_key",
    )

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties,
        mandatory: bool = False,
        *,
        batch: Batch | None = None,
        index: int = 0,
        tracked: bool = True,
        on_fail: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
        self.message_id: str | None = properties.message_id
        self._batch = batch
        self._index = index
        self._settled = False
        # untracked: nobody waits for it (an RPC reply or request), so no future to create
        # and settle; on_fail (untracked only) hears of a failure
        self._future: Future[None] | None = Future() if batch is None and tracked else None
        self._on_fail = on_fail

    @property
    def future(self) -> Future[None]:
        """Resolves when the broker confirmed the message (not for batch members)."""
        if self._future is None:
            raise TypeError("a message of a batch, or untracked, has no future of its own")
        return self._future

    def done(self) -> bool:
        """True once confirmed or failed."""
        return self._settled if self._future is None else self._future.done()

    def succeed(self) -> None:
        """Settle as confirmed (no effect if already settled)."""
        self._settle(None)

    def fail(self, error: BaseException) -> None:
        """Settle as failed (no effect if already settled)."""
        self._settle(error)

    def confirmed(self, acked: bool, returned: tuple[int, str] | None) -> None:
        """Settle by the broker's confirm: ``Nacked``, ``Unroutable`` if returned, or done.

        Args:
            acked: False for a ``basic.nack``.
            returned: (reply code, reply text) of the ``basic.return`` that came before
                the confirm, if any.
        """
        if not acked:
            self.fail(
                Nacked(
                    f"broker nacked the message to exchange {self.exchange!r} "
                    f"with routing key {self.routing_key!r}",
                    exchange=self.exchange,
                    routing_key=self.routing_key,
                    message_id=self.message_id,
                )
            )
        elif returned is not None:
            self.fail(
                Unroutable(
                    exchange=self.exchange,
                    routing_key=self.routing_key,
                    reply_code=returned[0],
                    reply_text=returned[1],
                    message_id=self.message_id,
                )
            )
        else:
            self.succeed()

    def _settle(self, error: BaseException | None) -> None:
        future = self._future
        if future is not None:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
            return
        if not self._settled:
            self._settled = True
            if self._batch is not None:
                self._batch.settle(self._index, error)
            elif error is not None and self._on_fail is not None:
                self._on_fail(error)


class Pending:
    """A publish awaiting its confirm: sequence number (delivery tag) and any return."""

    __slots__ = ("message", "returned", "seq")

    def __init__(self, message: OutgoingMessage, seq: int) -> None:
        self.message = message
        self.seq = seq
        self.returned: tuple[int, str] | None = None


# how many same-route candidates a return is compared with before the oldest one is taken
RETURN_SCAN = 1000


def same_content(m: OutgoingMessage, props: pika.BasicProperties, body: bytes) -> bool:
    """Whether a returned message is a copy of ``m`` (same body and identifying fields)."""
    return (
        m.message_id == props.message_id
        and m.properties.correlation_id == props.correlation_id
        and m.body == body
    )


class ConfirmTracking(NackStreaks):
    """Publisher confirms and returns of one channel.

    Base of :class:`~hutch._amqp.channel.Channel`; runs only while driving the
    connection.
    """

    _unconfirmed: OrderedDict[int, Pending]
    _seq: int
    _confirmed_high: int
    _returned_seq: int
    on_return: Callable[[int, str, Properties], None] | None

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag: int = method.delivery_tag
        nack = isinstance(method, pika.spec.Basic.Nack)
        if tag > self._confirmed_high:
            self._confirmed_high = tag
        if method.multiple:
            done = []
            while self._unconfirmed:
                first = next(iter(self._unconfirmed))
                if first > tag:
                    break
                done.append(self._unconfirmed.popitem(last=False)[1])
        else:
            one = self._unconfirmed.pop(tag, None)
            done = [one] if one is not None else []
        for pending in done:
            if not pending.message.done():
                pending.message.confirmed(not nack, pending.returned)
        if done:
            self._count_confirm(nack, len(done))

    def _match_return(
        self, exchange: str, routing_key: str, props: pika.BasicProperties, body: bytes
    ) -> Pending | None:
        """The unconfirmed publish a ``basic.return`` belongs to, or None.

        Matched by publish sequence, never by message id alone. The broker handles a
        channel's publishes in order and sends the return of an unroutable mandatory
        publish while handling it, before that publish's confirm (RabbitMQ's "Publisher
        Confirms": ``basic.return`` comes before ``basic.ack``); confirms of later publishes
        can only come later still. So the returned publish:

        * is newer than every confirm received so far (``seq > _confirmed_high``),
        * is newer than the publish the previous return belonged to (``_returned_seq``),
        * is mandatory, and went to the exchange and routing key the return names.

        Among those the oldest wins: the first whose body, message id and correlation id
        are the returned ones, else the first with that exchange and routing key. (Two
        such publishes differ in routability only if the topology changed between them;
        then their content tells them apart.) The scan starts where the previous one
        stopped, so a stream of returns costs one pass over the publishes in flight.
        """
        fallback: Pending | None = None
        looked = 0
        for seq in range(max(self._confirmed_high, self._returned_seq) + 1, self._seq + 1):
            pending = self._unconfirmed.get(seq)
            if pending is None or pending.returned is not None:
                continue
            m = pending.message
            if not m.mandatory or m.exchange != exchange or m.routing_key != routing_key:
                continue
            if same_content(m, props, body):
                fallback = pending
                break
            if fallback is None:
                fallback = pending
            looked += 1
            if looked >= RETURN_SCAN:
                break
        if fallback is not None:
            self._returned_seq = fallback.seq
        return fallback

    def _on_return(self, _ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        pending = self._match_return(method.exchange, method.routing_key, props, body)
        if pending is not None:
            pending.returned = (method.reply_code, method.reply_text)
            return
        if self.on_return is not None:
            try:
                properties = from_pika_properties(props)
            except ValueError:
                properties = Properties(
                    correlation_id=props.correlation_id, message_id=props.message_id
                )
            self.on_return(method.reply_code, method.reply_text, properties)
            return
        log.debug(
            "hutch: message returned by broker: exchange=%r routing_key=%r %s %s",
            method.exchange,
            method.routing_key,
            method.reply_code,
            method.reply_text,
        )

    def _fail_unconfirmed(self, error: BaseException) -> None:
        pending, self._unconfirmed = self._unconfirmed, OrderedDict()
        for p in pending.values():
            p.message.fail(error)


class AckCoalescing(ConfirmTracking):
    """Acks and nacks of one channel.

    Coalesced into ``multiple=True`` frames; base of
    :class:`~hutch._amqp.channel.Channel`.
    """

    _io: Driver
    _ch: BlockingChannel | None
    generation: int
    _unacked: deque[int]
    _acks_pending: set[int]
    _settled: set[int]
    _ack_flush_scheduled: bool

    def _settle(self, gen: int, tag: int, *, ack: bool, requeue: bool) -> None:
        ch = self._ch
        if gen != self.generation or ch is None or not ch.is_open:
            log.debug(
                "hutch: dropping %s of delivery %d from a closed channel",
                "ack" if ack else "nack",
                tag,
            )
            return
        impl = async_channel(ch)
        if ack:
            impl.basic_ack(tag)
        else:
            impl.basic_nack(tag, requeue=requeue)
        self._settled.add(tag)

    def _queue_ack(self, gen: int, tag: int) -> None:
        if gen != self.generation or self._ch is None:
            log.debug("hutch: dropping ack of delivery %d from a closed channel", tag)
            return
        self._acks_pending.add(tag)
        if not self._ack_flush_scheduled:
            self._ack_flush_scheduled = True
            # runs after every task already queued, so acks arriving together coalesce
            self._io.submit(self._flush_acks)

    def _flush_acks(self, *, now: bool = False) -> None:
        # now: straight to the socket (see pika_private.ack)
        self._ack_flush_scheduled = False
        ch = self._ch
        pending = self._acks_pending
        if ch is None or not ch.is_open:
            pending.clear()
            return
        impl = async_channel(ch)
        unacked, settled = self._unacked, self._settled
        last = 0
        while unacked:
            first = unacked[0]
            if first in pending:
                pending.discard(first)
                last = first
            elif first in settled:
                settled.discard(first)
            else:
                break
            unacked.popleft()
        if last:
            # every outstanding delivery up to `last` is settled: one frame acks them all
            ack(impl, last, True, now=now)
        for tag in pending:
            ack(impl, tag, False, now=now)
            settled.add(tag)
        pending.clear()
