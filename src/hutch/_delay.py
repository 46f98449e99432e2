"""Broker-side delay queues: one builder for delayed messages and for retries.

A delay queue holds messages for a fixed time and then hands them on, with nothing but
RabbitMQ's own features (no plugin): its ``x-message-ttl`` is the delay, and its
dead-letter exchange and routing key name the target. A message published to it expires
after the delay and is dead-lettered to the target, where consumers see it.

Why one queue per distinct delay: RabbitMQ expires messages only at the head of a queue.
With a per-message ``expiration`` a long delay at the head would hold back every shorter
one behind it; with the TTL on the queue every message in it has the same delay, so the
queue is FIFO in expiry order too and each message leaves on time.

* Delays are whole milliseconds (rounded to the nearest); 0 means no delay queue at all.
* A message arrives no earlier than its delay; typically a few milliseconds to tens of
  milliseconds later (the broker's expiry timer and the dead-letter hop).
* Each queue expires (``x-expires``) :data:`DELAY_QUEUE_GRACE` seconds past its TTL
  after the last declaration; a user re-declares it well before that (every
  ``DELAY_QUEUE_GRACE / 2`` seconds), so a message inside is never lost to the expiry.
* The dead-lettered message carries RabbitMQ's ``x-death`` header, and its final routing
  is not checked: a target exchange that routes it nowhere drops it.

Names: ``<queue>.retry.<ms>`` for a worker pool's retries, ``<queue>.delay.<ms>`` for a
message delayed to a queue (the default exchange), ``<exchange>.delay.<ms>/<routing key>``
for a message delayed to an exchange, and ``hutch.delay.<ms>.<digest>`` when that would be
longer than AMQP's 255 bytes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hutch._amqp import OutgoingMessage
from hutch._checks import MAX_TIMEOUT
from hutch._topology import Queue

__all__ = [
    "DELAY_QUEUE_GRACE",
    "DelayQueues",
    "check_delay",
    "check_publish_delay",
    "delay_queue",
]

log = logging.getLogger("hutch")

#: A delay queue lives this long (seconds) past its TTL once nobody declares it any more.
DELAY_QUEUE_GRACE = 600.0


def check_delay(name: str, value: object) -> int:
    """Check a delay and return it in whole milliseconds (0: no delay).

    Args:
        name: The argument's name, for the message.
        value: Seconds as an ``int`` or ``float``, or a :class:`datetime.timedelta`.

    Returns:
        The delay in milliseconds, rounded to the nearest.

    Raises:
        TypeError: Not a number of seconds or a ``timedelta`` (``bool`` included).
        ValueError: Negative, not finite, or longer than RabbitMQ's longest TTL
            (2**32-1 ms, about 49.7 days).
    """
    if isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be seconds (int or float) or a datetime.timedelta, "
            f"got {type(value).__name__} {value!r}"
        )
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_TIMEOUT:
        raise ValueError(
            f"{name} must be a finite number of seconds >= 0 and at most {MAX_TIMEOUT} "
            f"(RabbitMQ's longest message TTL, 2**32-1 ms), got {value!r}"
        )
    return min(round(seconds * 1000), 2**32 - 1)


def check_publish_delay(delay: object, properties: Mapping[str, Any]) -> int:
    """Check a publish's ``delay`` against its properties; milliseconds (0: none).

    Raises:
        TypeError: See :func:`check_delay`.
        ValueError: See :func:`check_delay`; or ``expiration`` given too.
    """
    if delay is None:
        return 0
    ms = check_delay("delay", delay)
    if ms and properties.get("expiration") is not None:
        raise ValueError(
            "delay and expiration cannot be combined: in the delay queue the message "
            "would expire early; give the message its own TTL once delivered instead"
        )
    return ms


def _name(exchange: str, routing_key: str, ms: int, kind: str) -> str:
    if exchange == "":
        name = f"{routing_key}.{kind}.{ms}"
    else:
        name = f"{exchange}.{kind}.{ms}/{routing_key}"
    if len(name.encode()) > 255:
        digest = hashlib.sha256(f"{exchange}\0{routing_key}".encode()).hexdigest()[:32]
        name = f"hutch.{kind}.{ms}.{digest}"
    return name


def delay_queue(
    exchange: str, routing_key: str, ms: int, *, durable: bool, kind: str = "delay"
) -> Queue:
    """The delay queue that hands messages on to ``exchange``/``routing_key`` after ``ms``.

    Args:
        exchange: The target exchange (``""``: the default exchange, so the routing key
            names the target queue).
        routing_key: The routing key the messages are dead-lettered with.
        ms: The delay in milliseconds (at least 1).
        durable: Declare the queue durable (for persistent messages).
        kind: ``"delay"`` or ``"retry"``: the word in the queue's name.

    Returns:
        The queue to declare.
    """
    return Queue(
        _name(exchange, routing_key, ms, kind),
        durable=durable,
        message_ttl=ms / 1000,
        expires=ms / 1000 + DELAY_QUEUE_GRACE,
        dead_letter_exchange=exchange,
        dead_letter_routing_key=routing_key,
    )


@dataclass
class _Entry:
    queue: Queue
    declared_at: float | None = None


class DelayQueues:
    """The delay queues one publisher or worker pool uses, declared and renewed (internal).

    Thread-safe. A queue is declared on first use and again when its last declaration is
    ``DELAY_QUEUE_GRACE / 2`` seconds old, so ``x-expires`` never removes a queue in use.

    Args:
        declare: Declares a queue (on a channel of the caller's).
        kind: ``"delay"`` or ``"retry"``: the word in the queues' names.
    """

    def __init__(self, declare: Callable[[Queue], None], kind: str = "delay") -> None:
        self._declare = declare
        self._kind = kind
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, int, bool], _Entry] = {}

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the queues declared so far."""
        with self._lock:
            return tuple(e.queue.name for e in self._entries.values() if e.declared_at)

    def queue_for(
        self, exchange: str, routing_key: str, ms: int, *, durable: bool, again: bool = False
    ) -> str:
        """Declare (or renew) the delay queue for a target and a delay; return its name.

        Args:
            exchange: The target exchange.
            routing_key: The target routing key.
            ms: The delay in milliseconds (at least 1).
            durable: Whether the queue is durable.
            again: Declare it even if it was declared recently (it was deleted).

        Returns:
            The delay queue's name.

        Raises:
            HutchError: The declaration failed (a queue of that name with other settings).
        """
        key = (exchange, routing_key, ms, durable)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = _Entry(
                    delay_queue(exchange, routing_key, ms, durable=durable, kind=self._kind)
                )
                self._entries[key] = entry
            if (
                again
                or entry.declared_at is None
                or now - entry.declared_at > DELAY_QUEUE_GRACE / 2
            ):
                self._declare(entry.queue)
                entry.declared_at = now
            return entry.queue.name

    def redeclare(self, name: str) -> None:
        """Declare the delay queue called ``name`` again (it was deleted under its user).

        Args:
            name: A name :meth:`queue_for` returned.
        """
        with self._lock:
            for entry in self._entries.values():
                if entry.queue.name == name:
                    self._declare(entry.queue)
                    entry.declared_at = time.monotonic()
                    return

    def readdress(
        self, message: OutgoingMessage, exchange: str, ms: int, durable: bool, mandatory: bool
    ) -> None:
        """Send ``message`` (bound for ``exchange``) to its delay queue instead.

        Args:
            message: A message built for its target; its routing key is the target's.
            exchange: The target exchange.
            ms: The delay in milliseconds (at least 1).
            durable: Whether the delay queue is durable.
            mandatory: Publish mandatory (with confirms: a deleted delay queue is noticed).
        """
        name = self.queue_for(exchange, message.routing_key, ms, durable=durable)
        message.exchange = ""
        message.routing_key = name
        message.mandatory = mandatory

    def after_return(self, message: OutgoingMessage) -> OutgoingMessage:
        """Declare the delay queue of a returned ``message`` again; a fresh copy to send.

        Args:
            message: A message :meth:`readdress` sent that the broker returned.

        Returns:
            The same message, to publish once more.
        """
        log.warning(
            "hutch: delay queue %r is gone (message returned); declaring it again",
            message.routing_key,
        )
        self.redeclare(message.routing_key)
        return OutgoingMessage(
            "", message.routing_key, message.body, message.properties, message.mandatory
        )
