"""The consuming operations of the memory broker: consumers, ``basic.get``, acks, QoS.

A mixin of :class:`~hutch._memory.broker.Broker` (same lock, same ``run``); split out so
each module holds one concept.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hutch._exceptions import ChannelClosed
from hutch._memory import errors
from hutch._memory.arguments import check_consume_arguments
from hutch._memory.consumers import Consumer, pick_consumer, unblock
from hutch._memory.dead_letter import DeathReason
from hutch._memory.errors import describe
from hutch._memory.message import Delivery
from hutch._memory.parts import BrokerPart
from hutch._memory.queues import Entry, MemoryQueue

if TYPE_CHECKING:
    from hutch._memory.connection import MemoryChannel

__all__ = ["REPLY_TO", "Consuming", "Unacked", "server_name"]

REPLY_TO = "amq.rabbitmq.reply-to"


def server_name(prefix: str) -> str:
    """A broker-chosen name: ``amq.gen-...``, ``amq.ctag-...``."""
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


@dataclass
class Unacked:
    """A delivery waiting for ack / nack / reject on its channel."""

    queue: MemoryQueue
    entry: Entry
    consumer: Consumer | None


class Consuming(BrokerPart):
    """Consumers, ``basic.get``, ack / nack / reject, recover and QoS (a Broker mixin)."""

    _reply_to: dict[str, Consumer]

    # ------------------------------------------------------------------ consuming
    def _dispatch(self, queue: MemoryQueue, now: float) -> None:
        """Hand ready messages to consumers with room, round robin."""
        while queue.ready and queue.consumers:
            consumer = pick_consumer(queue)
            if consumer is None:
                return
            entry = queue.pop()
            queue.head_since = now
            self._hand_over(consumer, queue, entry, now)

    def _hand_over(
        self, consumer: Consumer, queue: MemoryQueue | None, entry: Entry, now: float
    ) -> None:
        ch = consumer.channel
        tag = ch.next_delivery_tag()
        if not consumer.no_ack and queue is not None:
            ch.unacked[tag] = Unacked(queue, entry, consumer)
            consumer.unacked += 1
        delivery = _delivery(consumer.tag, tag, entry, 0)
        callback = consumer.on_message
        ch.connection.emit(lambda: callback(delivery))

    def consume(
        self,
        ch: MemoryChannel,
        queue_name: str,
        on_message: Callable[[Delivery], None],
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        consumer_tag: str = "",
        on_cancel: Callable[[str], None] | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> str:
        """``basic.consume``; returns the consumer tag (``amq.ctag-...`` if none given).

        ``arguments``: ``x-priority`` orders consumers (see :func:`pick_consumer`); checked
        as RabbitMQ checks them on a classic queue.
        """

        def op(now: float) -> str:
            tag = consumer_tag or server_name("amq.ctag-")
            if tag in ch.consumers:
                raise errors.channel_error(
                    errors.NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'"
                )
            if queue_name == REPLY_TO:
                if not no_ack:
                    raise errors.channel_error(
                        errors.PRECONDITION_FAILED, "reply consumer cannot acknowledge"
                    )
                if ch.reply_token is not None:  # one per channel, until cancelled
                    raise errors.channel_error(
                        errors.PRECONDITION_FAILED, "reply consumer already set"
                    )
                consumer = Consumer(tag, ch, queue_name, True, exclusive, 0, on_message, on_cancel)
                ch.reply_token = server_name("")
                self._reply_to[ch.reply_token] = consumer
                ch.consumers[tag] = consumer
                return tag
            queue = self._queue(ch, queue_name)
            priority = check_consume_arguments(arguments or {}, queue_name, ch.vhost.name)
            # RabbitMQ: no exclusive consumer on a single-active-consumer queue, ever
            single_active = queue.settings.single_active_consumer
            if (
                any(c.exclusive for c in queue.consumers)
                or (exclusive and queue.consumers)
                or (exclusive and single_active)
            ):
                raise errors.channel_error(
                    errors.ACCESS_REFUSED,
                    f"{describe('queue', queue_name, ch.vhost.name)} in exclusive use",
                )
            consumer = Consumer(
                tag,
                ch,
                queue_name,
                no_ack,
                exclusive,
                ch.consumer_prefetch,
                on_message,
                on_cancel,
                priority=priority,
            )
            ch.consumers[tag] = consumer
            queue.consumers.append(consumer)
            queue.had_consumer = True
            queue.last_used = now
            self._dispatch(queue, now)
            return tag

        return self.run(ch, op)

    def cancel(self, ch: MemoryChannel, consumer_tag: str) -> None:
        """``basic.cancel`` (an unknown tag is fine); an auto-delete queue may go with it."""
        self.run(ch, lambda now: self._cancel(ch, consumer_tag, now))

    def _cancel(self, ch: MemoryChannel, consumer_tag: str, now: float) -> None:
        queue = self._drop_consumer(ch, consumer_tag, now)
        if queue is not None and not self._auto_delete(ch, queue, now):
            self._dispatch(queue, now)

    def _drop_consumer(
        self, ch: MemoryChannel, consumer_tag: str, now: float
    ) -> MemoryQueue | None:
        """Take the consumer off its queue, without running the queue; that queue, or None."""
        consumer = ch.consumers.pop(consumer_tag, None)
        if consumer is None:
            return None
        if consumer.queue == REPLY_TO:
            if ch.reply_token is not None:
                self._reply_to.pop(ch.reply_token, None)
            ch.reply_token = None  # a request needs a reply consumer again
            return None
        queue = ch.vhost.queues.get(consumer.queue)
        if queue is None or consumer not in queue.consumers:
            return None
        queue.consumers.remove(consumer)
        queue.last_used = now
        return queue

    def _auto_delete(self, ch: MemoryChannel, queue: MemoryQueue, now: float) -> bool:
        """Delete an auto-delete queue whose last consumer went; True if it did."""
        if queue.auto_delete and not queue.consumers and queue.had_consumer:
            self._delete_queue(ch.vhost, queue, now)
            return True
        return False

    def _drop_consumers(self, ch: MemoryChannel, now: float) -> None:
        """Every consumer of a closing channel goes at once, then its unacked are requeued.

        As RabbitMQ's ``handle_ch_down``: a queue loses all the channel's consumers
        together (so with ``x-single-active-consumer`` the next active one is never
        another consumer of the same channel), an auto-delete queue left without any
        is deleted (its messages with it), and only then are the channel's unacked
        messages requeued and the queues run.
        """
        left: dict[int, MemoryQueue] = {}
        for tag in list(ch.consumers):
            queue = self._drop_consumer(ch, tag, now)
            if queue is not None:
                left[id(queue)] = queue
        for key, queue in list(left.items()):
            if self._auto_delete(ch, queue, now):
                del left[key]
        self._settle(ch, sorted(ch.unacked), ack=False, requeue=True, now=now)
        for queue in left.values():  # none deleted since: settling deletes no queue
            self._dispatch(queue, now)

    def get(self, ch: MemoryChannel, queue_name: str, *, no_ack: bool = False) -> Delivery | None:
        """``basic.get``: the head of the queue, or None if it is empty."""

        def op(now: float) -> Delivery | None:
            queue = self._queue(ch, queue_name)
            queue.last_used = now
            if not queue.ready:
                return None
            entry = queue.pop()
            queue.head_since = now
            tag = ch.next_delivery_tag()
            if not no_ack:
                ch.unacked[tag] = Unacked(queue, entry, None)
            return _delivery("", tag, entry, queue.ready)

        return self.run(ch, op)

    def settle(
        self, ch: MemoryChannel, delivery_tag: int, *, multiple: bool, ack: bool, requeue: bool
    ) -> None:
        """``basic.ack`` / ``basic.nack`` / ``basic.reject``.

        Raises:
            PreconditionFailed: 406 ``unknown delivery tag N`` (the channel closes).
        """

        def op(now: float) -> None:
            # RabbitMQ's collect_acks: the tag itself must be unacked, multiple or not
            # (only multiple with tag 0 means "every one", even none)
            if multiple and delivery_tag == 0:
                tags = list(ch.unacked)
            elif multiple:
                if delivery_tag not in ch.unacked:
                    raise _unknown_tag(delivery_tag)
                tags = [t for t in ch.unacked if t <= delivery_tag]
            else:
                if delivery_tag not in ch.unacked:
                    raise _unknown_tag(delivery_tag)
                tags = [delivery_tag]
            self._settle(ch, tags, ack=ack, requeue=requeue, now=now)

        self.run(ch, op)

    def _settle(
        self, ch: MemoryChannel, tags: list[int], *, ack: bool, requeue: bool, now: float
    ) -> None:
        touched: dict[int, MemoryQueue] = {}
        requeued: dict[int, MemoryQueue] = {}
        for tag in tags:
            item = ch.unacked.pop(tag)
            if item.consumer is not None:
                item.consumer.unacked -= 1
            queue = item.queue
            alive = ch.vhost.queues.get(queue.name) is queue
            if ack or not alive:
                pass
            elif requeue:
                head = queue.head()
                if head is None or head.seq > item.entry.seq:
                    queue.head_since = now
                queue.requeue(item.entry)
                if item.entry.expiry is not None:
                    ch.vhost.time(queue)  # it may have left the timed ones while empty
                requeued[id(queue)] = queue
            else:
                self._dead_letter(ch.vhost, queue, item.entry.message, DeathReason.REJECTED, now)
            if alive:
                touched[id(queue)] = queue
        for queue in requeued.values():
            self._drop_head(ch.vhost, queue, now)  # a requeue can take it over its length
        self._unblock(ch)
        for consumer in list(ch.consumers.values()):
            consumed = ch.vhost.queues.get(consumer.queue)
            if consumed is not None:
                touched[id(consumed)] = consumed
        for queue in touched.values():
            self._dispatch(queue, now)

    def _unblock(self, ch: MemoryChannel) -> None:
        """The channel's blocked consumers with room again rejoin their queues' rotation."""
        blocked = [c for c in ch.consumers.values() if c.blocked]  # on every ack: mostly none
        by_queue: dict[int, tuple[MemoryQueue, list[Consumer]]] = {}
        for consumer in sorted(blocked, key=lambda c: -c.priority):
            queue = ch.vhost.queues.get(consumer.queue)
            if queue is not None:
                by_queue.setdefault(id(queue), (queue, []))[1].append(consumer)
        for queue, consumers in by_queue.values():
            unblock(consumers, queue)

    def recover(self, ch: MemoryChannel) -> None:
        """``basic.recover(requeue=True)``: requeue every unacked delivery of the channel."""
        self.run(
            ch, lambda now: self._settle(ch, sorted(ch.unacked), ack=False, requeue=True, now=now)
        )

    def qos(self, ch: MemoryChannel, prefetch_count: int, *, global_: bool = False) -> None:
        """``basic.qos``: per new consumer (RabbitMQ's ``global=false``) or per channel.

        As in RabbitMQ 3.10, a per-consumer ``basic.qos`` also lifts the channel's limit:
        the last one sent decides whether the channel has one.
        """

        def op(now: float) -> None:
            if global_:
                if prefetch_count and not ch.global_prefetch:
                    # RabbitMQ's limiter starts from every unacked message of the channel,
                    # basic.get's included, and never takes those off ("not strictly
                    # right ... Pretty obscure though", rabbit_channel's basic.qos)
                    ch.global_phantom = sum(1 for u in ch.unacked.values() if u.consumer is None)
                ch.global_prefetch = prefetch_count
            else:
                ch.consumer_prefetch = prefetch_count
                ch.global_prefetch = 0
            self._unblock(ch)
            for consumer in ch.consumers.values():
                queue = ch.vhost.queues.get(consumer.queue)
                if queue is not None:
                    self._dispatch(queue, now)

        self.run(ch, op)


def _unknown_tag(tag: int) -> ChannelClosed:
    return errors.channel_error(errors.PRECONDITION_FAILED, f"unknown delivery tag {tag}")


def _delivery(consumer_tag: str, tag: int, entry: Entry, remaining: int) -> Delivery:
    message = entry.message
    props = message.properties
    if props.headers and "BCC" in props.headers:
        props = props.replace(headers={k: v for k, v in props.headers.items() if k != "BCC"})
    return Delivery(
        consumer_tag,
        tag,
        message.exchange,
        message.routing_key,
        entry.redelivered,
        message.body,
        props,
        remaining,
    )
