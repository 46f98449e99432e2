"""Consumers and who gets the next message (RabbitMQ's round robin with prefetch).

A queue hands its head to the first consumer in its round-robin list that has room
(unacknowledged deliveries below its prefetch, and below its channel's global prefetch if
one is set) among those of the highest priority with room (``x-priority``: a consumer of
lower priority gets messages only while every higher one is full), then moves that
consumer to the end of the list. As in RabbitMQ's ``rabbit_queue_consumers``, a full
consumer is *blocked* when the queue tries it and passes it over (not when it fills up),
and leaves the rotation; when an ack, nack, reject or recover gives it room again it is
unblocked and rejoins at the end of the list, behind the consumers that kept going. With
``x-single-active-consumer`` only the oldest consumer receives messages; the next one takes
over when it is cancelled. Everything here runs under the broker's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hutch._memory.message import Delivery

if TYPE_CHECKING:
    from hutch._memory.connection import MemoryChannel
    from hutch._memory.queues import MemoryQueue

__all__ = ["Consumer", "pick_consumer", "unblock"]


@dataclass(eq=False)
class Consumer:
    """A consumer of a queue on a channel.

    Attributes:
        tag: Its consumer tag, unique on the channel.
        channel: The channel it consumes on.
        queue: The queue's name.
        no_ack: Deliveries need no acknowledgement (auto-ack).
        exclusive: No other consumer may consume from the queue.
        prefetch: Its limit of unacknowledged deliveries (0: none).
        on_message: Called with each :class:`~hutch._memory.message.Delivery`.
        on_cancel: Called with the tag if the broker cancels it (its queue is deleted).
        unacked: Its unacknowledged deliveries now.
        priority: Its ``x-priority`` (default 0).
        blocked: Passed over while full: out of the rotation until it has room again.
    """

    tag: str
    channel: MemoryChannel
    queue: str
    no_ack: bool
    exclusive: bool
    prefetch: int
    on_message: Callable[[Delivery], None]
    on_cancel: Callable[[str], None] | None = None
    unacked: int = 0
    priority: int = 0
    blocked: bool = False

    def has_room(self) -> bool:
        """True if it may receive one more delivery now.

        A no-ack consumer has no limit of its own, but its channel's limit holds it back
        too (RabbitMQ's limiter is asked for every delivery on the channel).
        """
        if not self.no_ack and self.prefetch and self.unacked >= self.prefetch:
            return False
        return self.channel.has_room()


def pick_consumer(queue: MemoryQueue) -> Consumer | None:
    """The consumer that gets the queue's next message, rotated to the end; or None."""
    if queue.settings.single_active_consumer:
        active = queue.consumers[:1]
        return active[0] if active and active[0].has_room() else None
    if len(queue.consumers) == 1:  # the common case, without the sorting below
        only = queue.consumers[0]
        if only.blocked:
            return None
        if only.has_room():
            return only
        only.blocked = True
        return None
    # RabbitMQ's priority queue of active consumers: highest priority first, then in
    # rotation order; each one tried and found full is blocked
    active = sorted((c for c in queue.consumers if not c.blocked), key=lambda c: -c.priority)
    for consumer in active:
        if consumer.has_room():
            queue.consumers.remove(consumer)
            queue.consumers.append(consumer)
            return consumer
        consumer.blocked = True
    return None


def unblock(consumers: list[Consumer], queue: MemoryQueue) -> None:
    """Put back in ``queue``'s rotation, at its end, each of ``consumers`` with room again.

    Args:
        consumers: Consumers of ``queue`` (in the order they are to rejoin).
        queue: Their queue.
    """
    for consumer in consumers:
        if consumer.blocked and consumer.has_room() and consumer in queue.consumers:
            consumer.blocked = False
            queue.consumers.remove(consumer)
            queue.consumers.append(consumer)
