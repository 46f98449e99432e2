"""Queues: ready messages, expiry, length limits and priorities (classic queue rules).

What RabbitMQ 3.10's classic queue does, and so this one:

- A message's expiry is fixed when it is enqueued: the earlier of ``x-message-ttl`` and
  its own ``expiration``. Expired messages leave only from the **head** (a message that
  expired behind one that has not stays until it reaches the head), then are dead-lettered
  (reason ``expired``) or dropped.
- ``x-max-length`` / ``x-max-length-bytes`` count ready messages only. ``drop-head`` drops
  (or dead-letters, reason ``maxlen``) from the head after enqueueing, and after a
  requeue takes the queue over its limit; ``reject-publish``
  refuses the new message (the publisher gets a nack); ``reject-publish-dlx`` also
  dead-letters it.
- ``x-max-priority`` keeps one FIFO per priority (above the maximum counts as the
  maximum); the highest non-empty one is the head. A requeued message goes back to its
  original place (by publish order), flagged ``redelivered``.
- ``x-expires`` deletes the queue once it has had no consumer, no ``basic.get`` and no
  redeclaration for that long.

Everything here runs under the broker's lock; the broker routes the dead letters.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hutch._memory.message import Message
from hutch._topology import Overflow

if TYPE_CHECKING:
    from hutch._memory.consumers import Consumer

__all__ = ["Entry", "MemoryQueue", "QueueSettings"]

_seq = itertools.count(1)


@dataclass
class Entry:
    """A message in a queue.

    Attributes:
        message: The message.
        expiry: When it expires (clock seconds), or None.
        seq: Publish order within the broker (requeued messages go back by it).
        redelivered: Delivered before and requeued.
        priority: Its bucket in a priority queue (0 otherwise).
    """

    message: Message
    expiry: float | None
    seq: int = field(default_factory=lambda: next(_seq))
    redelivered: bool = False
    priority: int = 0


@dataclass(frozen=True)
class QueueSettings:
    """The ``x-`` arguments a queue acts on, parsed (times in milliseconds)."""

    message_ttl: int | None = None
    expires: int | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: Overflow = Overflow.DROP_HEAD
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    max_priority: int | None = None
    single_active_consumer: bool = False

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any]) -> QueueSettings:
        """Read the arguments (already validated by the broker)."""

        def text(key: str) -> str | None:
            value = arguments.get(key)
            if isinstance(value, bytes):
                return value.decode()
            return value if isinstance(value, str) else None

        def number(key: str) -> int | None:
            value = arguments.get(key)
            return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

        overflow = text("x-overflow")
        return cls(
            message_ttl=number("x-message-ttl"),
            expires=number("x-expires"),
            max_length=number("x-max-length"),
            max_length_bytes=number("x-max-length-bytes"),
            overflow=Overflow(overflow) if overflow else Overflow.DROP_HEAD,
            dead_letter_exchange=text("x-dead-letter-exchange"),
            dead_letter_routing_key=text("x-dead-letter-routing-key"),
            max_priority=number("x-max-priority"),
            single_active_consumer=arguments.get("x-single-active-consumer") is True,
        )

    @property
    def timed(self) -> bool:
        """A message TTL or ``x-expires``: the queue has times to keep, even when empty."""
        return self.message_ttl is not None or self.expires is not None


@dataclass(eq=False)
class MemoryQueue:
    """A queue of a vhost (broker-internal; every method runs under the broker's lock).

    Attributes:
        name: Its name.
        durable: As declared (nothing persists; kept for equivalence checks).
        exclusive: Declared exclusive.
        owner: The connection that owns an exclusive queue.
        auto_delete: Deleted when its last consumer goes, once it had one.
        arguments: As declared.
        settings: The arguments it acts on.
        consumers: Its consumers in round-robin order (the next one first).
        last_used: Clock time of the last declare / get / consumer change (``x-expires``).
        had_consumer: It had a consumer once (an auto-delete queue goes with its last).
        head_since: Clock time its head became the head (an expired message behind the
            head leaves when it reaches the head, not before).
        created: Its place in the broker's order of creation.
        timed: It is among its vhost's queues that may expire something (``Vhost.timed``).
    """

    name: str
    durable: bool
    exclusive: bool
    owner: object | None
    auto_delete: bool
    arguments: dict[str, Any]
    last_used: float
    settings: QueueSettings = field(init=False)
    consumers: list[Consumer] = field(default_factory=list)
    had_consumer: bool = False
    head_since: float = 0.0
    created: int = 0
    timed: bool = False
    _buckets: list[deque[Entry]] = field(init=False)
    _ready_bytes: int = 0
    _ready_count: int = 0

    def __post_init__(self) -> None:
        self.settings = QueueSettings.from_arguments(self.arguments)
        levels = (self.settings.max_priority or 0) + 1 if self.settings.max_priority else 1
        self._buckets = [deque() for _ in range(levels)]

    # ---------------------------------------------------------------- counting
    @property
    def ready(self) -> int:
        """Messages ready for delivery."""
        return self._ready_count

    @property
    def ready_bytes(self) -> int:
        """Body bytes of the ready messages."""
        return self._ready_bytes

    def entries(self) -> Iterator[Entry]:
        """The ready messages in delivery order."""
        for bucket in reversed(self._buckets):
            yield from bucket

    # ---------------------------------------------------------------- enqueueing
    def expiry_for(self, message: Message, now: float) -> float | None:
        """When ``message`` expires if enqueued at ``now`` (None: never)."""
        ttls = [] if self.settings.message_ttl is None else [self.settings.message_ttl]
        expiration = message.properties.expiration
        if expiration is not None:
            ttls.append(int(expiration))
        return now + min(ttls) / 1000 if ttls else None

    def would_overflow(self, message: Message) -> bool:
        """True if enqueueing ``message`` would exceed a length limit."""
        s = self.settings
        return (s.max_length is not None and self._ready_count + 1 > s.max_length) or (
            s.max_length_bytes is not None and self._ready_bytes + message.size > s.max_length_bytes
        )

    def over_limit(self) -> bool:
        """True if the ready messages exceed a length limit (``drop-head`` then drops)."""
        s = self.settings
        return (s.max_length is not None and self._ready_count > s.max_length) or (
            s.max_length_bytes is not None and self._ready_bytes > s.max_length_bytes
        )

    def _bucket(self, message: Message) -> int:
        top = len(self._buckets) - 1
        if top == 0:
            return 0
        return min(max(message.properties.priority or 0, 0), top)

    def enqueue(self, entry: Entry) -> None:
        """Append a message at the tail of its priority."""
        entry.priority = self._bucket(entry.message)
        self._buckets[entry.priority].append(entry)
        self._ready_count += 1
        self._ready_bytes += entry.message.size

    def requeue(self, entry: Entry) -> None:
        """Put a delivered message back at its original place, flagged redelivered."""
        entry.redelivered = True
        bucket = self._buckets[min(entry.priority, len(self._buckets) - 1)]
        index = len(bucket)
        while index > 0 and bucket[index - 1].seq > entry.seq:
            index -= 1
        bucket.insert(index, entry)
        self._ready_count += 1
        self._ready_bytes += entry.message.size

    # ---------------------------------------------------------------- taking
    def head(self) -> Entry | None:
        """The next message to deliver, or None."""
        for bucket in reversed(self._buckets):
            if bucket:
                return bucket[0]
        return None

    def pop(self) -> Entry:
        """Remove and return the head (the queue must not be empty)."""
        for bucket in reversed(self._buckets):
            if bucket:
                entry = bucket.popleft()
                self._ready_count -= 1
                self._ready_bytes -= entry.message.size
                return entry
        raise IndexError("pop from an empty queue")

    def next_expiry(self) -> float | None:
        """The earliest expiry among the heads of the priorities (when to look again)."""
        buckets = self._buckets
        if len(buckets) == 1:  # no priorities: the head's
            return buckets[0][0].expiry if buckets[0] else None
        times = [b[0].expiry for b in buckets if b and b[0].expiry is not None]
        return min(times) if times else None

    @property
    def may_expire(self) -> bool:
        """Something here can fall due: a message ready, or a TTL or ``x-expires``."""
        return bool(self._ready_count) or self.settings.timed

    def deadline(self) -> float | None:
        """When something here falls due next, or None if nothing can.

        That is the head's expiry (not before it became the head), or the queue's own
        (``x-expires``).
        """
        at = None
        if self._ready_count:
            expiry = self.next_expiry()
            if expiry is not None:
                at = max(expiry, self.head_since)
        gone = self.expires_at()
        if gone is not None and (at is None or gone < at):
            at = gone
        return at

    def pop_expired(self, now: float) -> Entry | None:
        """Remove and return an expired head (the one that expired first), or None."""
        best: deque[Entry] | None = None
        best_at = now
        for bucket in reversed(self._buckets):
            expiry = bucket[0].expiry if bucket else None
            if expiry is not None and expiry <= best_at and (best is None or expiry < best_at):
                best, best_at = bucket, expiry
        if best is None:
            return None
        entry = best.popleft()
        self._ready_count -= 1
        self._ready_bytes -= entry.message.size
        return entry

    def purge(self) -> list[Entry]:
        """Remove every ready message; return them."""
        gone = list(self.entries())
        for bucket in self._buckets:
            bucket.clear()
        self._ready_count = self._ready_bytes = 0
        return gone

    # ---------------------------------------------------------------- x-expires
    def expires_at(self) -> float | None:
        """When an unused queue is deleted (``x-expires``), or None."""
        if self.settings.expires is None or self.consumers:
            return None
        return self.last_used + self.settings.expires / 1000
