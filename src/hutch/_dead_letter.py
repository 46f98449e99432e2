"""Dead letters: messages that cannot be processed go to a queue, with the reason.

RabbitMQ's own dead-lettering (``x-dead-letter-exchange``) records only that a message was
rejected or expired. hutch wants the *why* next to the message, so a consumer that gives
up on a message publishes a copy (confirmed) to the dead-letter queue with headers naming
the reason, and only then acks the original: nothing is lost, nothing loops hot.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from hutch._channel import Channel, Delivery, OutgoingMessage, to_pika_properties
from hutch._exceptions import HutchError
from hutch._topology import Queue

if TYPE_CHECKING:
    from hutch._connection import Connection

__all__ = ["DeadLetters", "dead_letter_headers", "requeue_later"]

log = logging.getLogger("hutch")

ERROR = "x-hutch-error"
ERROR_TYPE = "x-hutch-error-type"
ATTEMPTS = "x-hutch-attempts"
ORIGINAL_EXCHANGE = "x-hutch-original-exchange"
ORIGINAL_ROUTING_KEY = "x-hutch-original-routing-key"
ORIGINAL_QUEUE = "x-hutch-original-queue"
FAILED_AT = "x-hutch-failed-at"

_MAX_REASON = 2000
#: Seconds a message whose dead-lettering failed is held before it is requeued.
REQUEUE_DELAY = 5.0


def dead_letter_headers(
    headers: dict[str, Any] | None,
    *,
    reason: str,
    error_type: str,
    attempts: int | None,
    exchange: str,
    routing_key: str,
    queue: str,
) -> dict[str, Any]:
    """Return ``headers`` plus the ``x-hutch-*`` headers that explain a dead letter.

    Args:
        headers: The message's original headers.
        reason: One-line reason (exception message); truncated to 2000 characters.
        error_type: The exception's type name, e.g. ``"ValidationError"``.
        attempts: How many times the message was tried, if known.
        exchange: The exchange the message had been published to.
        routing_key: The routing key it had been published with.
        queue: The queue it was consumed from.

    Returns:
        The merged headers.
    """
    merged = dict(headers or {})
    merged[ERROR] = reason[:_MAX_REASON]
    merged[ERROR_TYPE] = error_type
    if attempts is not None:
        merged[ATTEMPTS] = attempts
    merged[ORIGINAL_EXCHANGE] = exchange
    merged[ORIGINAL_ROUTING_KEY] = routing_key
    merged[ORIGINAL_QUEUE] = queue
    merged[FAILED_AT] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    return merged


def requeue_later(delivery: Delivery, delay: float = REQUEUE_DELAY) -> None:
    """Requeue ``delivery`` after ``delay`` seconds (thread-safe).

    For a message that could not be moved where it belongs (dead-letter or delay queue):
    it stays unacked meanwhile, so it is neither lost nor redelivered in a hot loop.

    Args:
        delivery: The delivery to requeue.
        delay: Seconds to wait first.
    """
    timer = threading.Timer(delay, delivery.nack, kwargs={"requeue": True})
    timer.daemon = True
    timer.start()


class DeadLetters:
    """Publishes failed messages to a dead-letter queue on a confirm channel (internal).

    Args:
        connection: The connection to use (a channel is opened on first use).
        queue: The dead-letter queue (declared durable on first use).
        source_queue: Name of the queue the messages come from, for the headers.
    """

    def __init__(self, connection: Connection, queue: Queue, source_queue: str) -> None:
        self._conn = connection
        self.queue = queue
        self.source_queue = source_queue
        self._channel: Channel | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> Channel:
        with self._lock:
            if self._channel is None:
                ch = self._conn.channel(confirms=True)
                try:
                    ch.declare([self.queue])
                except BaseException:
                    ch.close()
                    raise
                self._channel = ch
            return self._channel

    def declare(self) -> None:
        """Declare the dead-letter queue now."""
        self._ensure()

    def send(
        self,
        delivery: Delivery,
        *,
        reason: str,
        error_type: str,
        attempts: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Publish a copy of ``delivery`` with the reason, wait for the confirm, ack the original.

        If the copy cannot be published the original is requeued (never dropped).

        Args:
            delivery: The delivery that failed.
            reason: Why it failed.
            error_type: The exception type name.
            attempts: How many attempts were made.
            timeout: Seconds to wait for the confirm.
        """
        log.warning(
            "hutch: dead-lettering message %s from queue %r to %r: %s: %s",
            delivery.properties.message_id,
            self.source_queue,
            self.queue.name,
            error_type,
            reason,
        )
        props = delivery.properties
        headers = dead_letter_headers(
            dict(props.headers or {}),
            reason=reason,
            error_type=error_type,
            attempts=attempts,
            exchange=delivery.exchange,
            routing_key=delivery.routing_key,
            queue=self.source_queue,
        )
        out = props.merged(headers=headers, delivery_mode=2, expiration=None)
        message = OutgoingMessage("", self.queue.name, delivery.body, to_pika_properties(out))
        try:
            self._ensure().publish(message).result(timeout)
        except (HutchError, FutureTimeout, OSError) as exc:
            # Keep the message (unacked, so it still counts against prefetch) and requeue
            # it only after a pause: never dropped, and never a hot redelivery loop.
            log.error(
                "hutch: could not dead-letter message to %r, requeueing it in %.0f s: %s",
                self.queue.name,
                REQUEUE_DELAY,
                exc,
            )
            with self._lock:
                if self._channel is not None:
                    self._channel.close()
                    self._channel = None  # declare the queue again next time
            requeue_later(delivery)
            return
        delivery.ack()

    def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            self._channel.close()
