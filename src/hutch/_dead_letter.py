"""Dead letters: messages that cannot be processed go to a queue, with the reason.

RabbitMQ's own dead-lettering (``x-dead-letter-exchange``) records only that a message was
rejected or expired. hutch wants the *why* next to the message, so a consumer that gives
up on a message publishes a copy to the dead-letter queue with headers naming the reason,
and only then acks the original.

Every consumed message that fails ends in exactly one of the states of
:class:`Disposition`, and the consumer's counters say which:

==================  ================================================================
``DEAD_LETTERED``   a copy was published *mandatory* and *confirmed* to the
                    dead-letter queue (declared again if it was deleted meanwhile),
                    then the original was acked
``RETRIED``         a copy was published the same way to a delay queue of the work
                    queue (see :class:`~hutch.WorkerPool`), then the original was acked
``REQUEUED``        neither copy could be placed: the original stays unacked for
                    :data:`REQUEUE_DELAY` seconds and is then requeued, never acked
==================  ================================================================

A copy the broker returns (no queue to route to: the queue was deleted) is not a dead
letter: the queue is declared again and the copy published once more; if that fails too,
the original is requeued after the pause. Nothing is lost, nothing loops hot.

The headers of both copies come from :func:`failure_headers`. What goes to a delay queue
carries no ``x-death``/``x-first-death-*``/``x-last-death-*`` headers (RabbitMQ writes its
own when the delay expires, and refuses, or worse, crashes the queue, on foreign values),
and the attempt count there is hutch's own: ``x-hutch-attempts`` together with
``x-hutch-retry-of`` naming the work queue (see :func:`~hutch._retry.attempts_made`).
"""

from __future__ import annotations

import datetime as _dt
import enum
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from hutch._amqp import ChannelApi, Delivery, OutgoingMessage, to_pika_properties
from hutch._clock import Timer, join_thread
from hutch._exceptions import HutchError, Unroutable
from hutch._retry import ATTEMPTS_HEADER, RETRY_OF_HEADER
from hutch._topology import Queue

if TYPE_CHECKING:
    from hutch._connection import Connection

__all__ = [
    "DeadLetters",
    "Disposition",
    "PendingRequeues",
    "dead_letter_headers",
    "failure_headers",
    "publish_to_queue",
    "requeue_later",
    "retry_headers",
]

log = logging.getLogger("hutch")

ERROR = "x-hutch-error"
ERROR_TYPE = "x-hutch-error-type"
ATTEMPTS = ATTEMPTS_HEADER
RETRY_OF = RETRY_OF_HEADER
ORIGINAL_EXCHANGE = "x-hutch-original-exchange"
ORIGINAL_ROUTING_KEY = "x-hutch-original-routing-key"
ORIGINAL_QUEUE = "x-hutch-original-queue"
FAILED_AT = "x-hutch-failed-at"

#: RabbitMQ's dead-lettering history, never copied into a delay queue.
DEATH_HEADER = "x-death"
_DEATH_PREFIXES = ("x-first-death-", "x-last-death-")

_MAX_REASON = 2000
#: Seconds a message whose dead-lettering failed is held before it is requeued.
REQUEUE_DELAY = 5.0


class Disposition(enum.Enum):
    """Where a failed message went (see the table in this module's docstring)."""

    DEAD_LETTERED = "dead-lettered"
    RETRIED = "retried"
    REQUEUED = "requeued"


def _is_death_header(key: object) -> bool:
    return isinstance(key, str) and (key == DEATH_HEADER or key.startswith(_DEATH_PREFIXES))


def failure_headers(
    headers: Mapping[str, Any] | None,
    *,
    reason: str,
    error_type: str,
    attempts: int | None,
    retry_of: str | None = None,
    origin: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    """Return ``headers`` plus the ``x-hutch-*`` headers of a failed message's copy.

    The one builder for both kinds of copy: a retry (``retry_of`` given) and a dead letter
    (``origin`` given).

    Args:
        headers: The message's original headers (not changed).
        reason: One-line reason (exception message); truncated to 2000 characters.
        error_type: The exception's type name, e.g. ``"ValidationError"``.
        attempts: How many times the message was tried, if known.
        retry_of: For a retry: the work queue it goes back to. The copy then carries no
            ``x-death``/``x-first-death-*``/``x-last-death-*`` headers, and
            ``x-hutch-retry-of`` marks ``x-hutch-attempts`` as hutch's own count.
        origin: For a dead letter: the exchange, routing key and queue the message came
            from (``x-hutch-original-*``), with the time it failed (``x-hutch-failed-at``).

    Returns:
        The new headers.
    """
    merged = {
        k: v
        for k, v in (headers or {}).items()
        if k != RETRY_OF and (retry_of is None or not _is_death_header(k))
    }
    merged[ERROR] = reason[:_MAX_REASON]
    merged[ERROR_TYPE] = error_type
    if attempts is not None:
        merged[ATTEMPTS] = attempts
    else:
        merged.pop(ATTEMPTS, None)
    if retry_of is not None:
        merged[RETRY_OF] = retry_of
    if origin is not None:
        exchange, routing_key, queue = origin
        merged[ORIGINAL_EXCHANGE] = exchange
        merged[ORIGINAL_ROUTING_KEY] = routing_key
        merged[ORIGINAL_QUEUE] = queue
        merged[FAILED_AT] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    return merged


def dead_letter_headers(
    headers: Mapping[str, Any] | None,
    *,
    reason: str,
    error_type: str,
    attempts: int | None,
    exchange: str,
    routing_key: str,
    queue: str,
) -> dict[str, Any]:
    """Return ``headers`` plus the ``x-hutch-*`` headers that explain a dead letter.

    A dead letter carries no ``x-hutch-retry-of``: replayed into its work queue, it is a
    fresh message that gets every attempt again.

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
    return failure_headers(
        headers,
        reason=reason,
        error_type=error_type,
        attempts=attempts,
        origin=(exchange, routing_key, queue),
    )


def retry_headers(
    headers: Mapping[str, Any] | None,
    *,
    reason: str,
    error_type: str,
    attempts: int,
    queue: str,
) -> dict[str, Any]:
    """Return the headers of a retry's copy for a delay queue of work queue ``queue``.

    Args:
        headers: The message's original headers.
        reason: Why the attempt failed.
        error_type: The exception's type name.
        attempts: Attempts made so far (the one that just failed included).
        queue: The work queue the copy returns to.

    Returns:
        The headers, without RabbitMQ's ``x-death`` family.
    """
    return failure_headers(
        headers, reason=reason, error_type=error_type, attempts=attempts, retry_of=queue
    )


def requeue_later(
    delivery: Delivery, delay: float = REQUEUE_DELAY, *, pending: PendingRequeues | None = None
) -> None:
    """Requeue ``delivery`` after ``delay`` seconds (thread-safe).

    For a message that could not be moved where it belongs (dead-letter or delay queue):
    it stays unacked meanwhile, so it is neither lost nor redelivered in a hot loop.

    Args:
        delivery: The delivery to requeue.
        delay: Seconds to wait first.
        pending: Where the timer is kept, so closing its owner cancels it; None runs it
            unowned.
    """
    if pending is not None:
        pending.later(delivery, delay)
        return
    timer = Timer(
        delivery.channel.clock,
        delay,
        lambda: delivery.nack(requeue=True),
        name=f"hutch-requeue-{delivery.delivery_tag}",
    )
    timer.start()


class PendingRequeues:
    """The requeue timers of one consumer, cancelled when it closes (internal, thread-safe).

    A held message stays unacked until its timer requeues it. When the consumer closes,
    :meth:`cancel` stops the timers that have not fired and waits for any that are
    running, so nothing of them runs after the consumer's ``close()`` returns; the held
    messages go back to the queue when the consumer's channel closes (unacked).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timers: set[Timer] = set()
        self._closed = False

    def later(self, delivery: Delivery, delay: float = REQUEUE_DELAY) -> None:
        """Requeue ``delivery`` after ``delay`` seconds, unless cancelled first."""

        def fire() -> None:
            try:
                delivery.nack(requeue=True)
            except HutchError as exc:  # the channel is gone: the broker gives it back
                log.debug("hutch: requeue after the pause skipped: %s", exc)
            finally:
                with self._lock:
                    self._timers.discard(timer)

        # on the channel's clock: on a virtual memory broker the pause is a deadline
        timer = Timer(
            delivery.channel.clock, delay, fire, name=f"hutch-requeue-{delivery.delivery_tag}"
        )
        with self._lock:
            if self._closed:
                return  # closing: the channel's close returns the message
            self._timers.add(timer)
        timer.start()

    def cancel(self, timeout: float = 10.0) -> None:
        """Cancel the timers not yet fired; wait up to ``timeout`` s for running ones."""
        with self._lock:
            self._closed = True
            timers = list(self._timers)
            self._timers.clear()
        for t in timers:
            t.cancel()
        for t in timers:
            if t is not threading.current_thread() and t.is_alive():
                join_thread(t, timeout)


def publish_to_queue(
    channel: Callable[[], ChannelApi],
    queue: str,
    build: Callable[[], OutgoingMessage],
    redeclare: Callable[[], None],
    timeout: float,
) -> None:
    """Publish a copy to ``queue`` (mandatory, confirmed); declare the queue again if gone.

    A copy the broker returns (the queue was deleted) is not confirmed as placed: the queue
    is declared again with ``redeclare`` and a fresh copy from ``build`` published once
    more.

    Args:
        channel: Returns the confirm channel to publish on.
        queue: The queue's name (for the log).
        build: Makes the message to publish (``mandatory=True``); called once per try.
        redeclare: Declares the queue again.
        timeout: Seconds to wait for each confirm.

    Raises:
        Unroutable: Returned again after declaring the queue again.
        HutchError: Nacked, channel or connection failure, or the declaration failed.
        concurrent.futures.TimeoutError: No confirm within ``timeout``.
    """
    try:
        channel().publish(build()).result(timeout)
        return
    except Unroutable:
        log.warning("hutch: queue %r is gone (message returned); declaring it again", queue)
    redeclare()
    channel().publish(build()).result(timeout)


class DeadLetters:
    """Publishes failed messages to a dead-letter queue on a confirm channel (internal).

    Thread-safe: the workers of a pool share one.

    Args:
        connection: The connection to use (a channel is opened on first use).
        queue: The dead-letter queue (declared durable on first use).
        source_queue: Name of the queue the messages come from, for the headers.
    """

    def __init__(self, connection: Connection, queue: Queue, source_queue: str) -> None:
        self._conn = connection
        self.queue = queue
        self.source_queue = source_queue
        self._channel: ChannelApi | None = None
        self._lock = threading.Lock()
        #: Messages held before their requeue; cancelled by :meth:`close`.
        self.pending = PendingRequeues()

    def _ensure(self) -> ChannelApi:
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

    def _redeclare(self) -> None:
        self._ensure().declare([self.queue])

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
    ) -> Disposition:
        """Publish a copy of ``delivery`` with the reason, wait for the confirm, ack the original.

        The copy is mandatory: if the dead-letter queue was deleted it is declared again and
        the copy published once more. If the copy cannot be placed the original is requeued
        after :data:`REQUEUE_DELAY` seconds (never acked, never dropped).

        Args:
            delivery: The delivery that failed.
            reason: Why it failed.
            error_type: The exception type name.
            attempts: How many attempts were made.
            timeout: Seconds to wait for each confirm.

        Returns:
            ``DEAD_LETTERED`` or ``REQUEUED``: what really happened to the message.
        """
        log.warning(
            "hutch: dead-lettering message %s from queue %r to %r: %s: %s",
            delivery.properties.message_id,
            self.source_queue,
            self.queue.name,
            error_type,
            reason,
        )
        name = self.queue.name
        try:
            props = delivery.properties
            headers = dead_letter_headers(
                props.headers,
                reason=reason,
                error_type=error_type,
                attempts=attempts,
                exchange=delivery.exchange,
                routing_key=delivery.routing_key,
                queue=self.source_queue,
            )
            pika_props = to_pika_properties(
                props.merged(headers=headers, delivery_mode=2, expiration=None)
            )

            def build() -> OutgoingMessage:
                return OutgoingMessage("", name, delivery.body, pika_props, mandatory=True)

            publish_to_queue(self._ensure, name, build, self._redeclare, timeout)
        except (HutchError, FutureTimeout, OSError, ValueError, TypeError, OverflowError) as exc:
            # Keep the message (unacked, so it still counts against prefetch) and requeue
            # it only after a pause: never dropped, and never a hot redelivery loop.
            log.error(
                "hutch: could not dead-letter message to %r, requeueing it in %.0f s: %s",
                name,
                REQUEUE_DELAY,
                exc,
            )
            with self._lock:
                if self._channel is not None:
                    self._channel.close()
                    self._channel = None  # declare the queue again next time
            self.pending.later(delivery)
            return Disposition.REQUEUED
        delivery.ack()
        return Disposition.DEAD_LETTERED

    def close(self) -> None:
        """Cancel the pending requeues (see :class:`PendingRequeues`), close the channel."""
        self.pending.cancel()
        if self._channel is not None:
            self._channel.close()
