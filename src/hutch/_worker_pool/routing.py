"""Failure routing: what happens to a message after an attempt, and doing it.

:func:`decide` is pure: from the attempt's :class:`~hutch._worker_pool.outcome.Outcome`,
the attempt number, the delivery's ``redelivered`` flag and the
:class:`~hutch.RetryPolicy` it picks a :class:`Route`:

=======================================  ============================================
outcome                                  route
=======================================  ============================================
``OK``                                   ``ACK``
``CRASH`` on attempt 1, not redelivered  ``REQUEUE`` (any worker may take it again)
``RETRY``, ``CRASH`` or a ``retry_on``   ``RETRY`` after the handler's delay or the
``ERROR``, policy set, attempt <         policy's backoff
``max_attempts``
the same at or past ``max_attempts``     ``DEAD_LETTER``, reason ends with
                                         "(gave up after N attempts)"
``REJECT``, ``INVALID``, another         ``DEAD_LETTER``
``ERROR``, or no policy
=======================================  ============================================

So a message runs at most ``max_attempts`` times through retries (a first crash's
requeue aside, which the broker marks ``redelivered``).

:class:`FailureRouter` carries a ``RETRY`` or ``DEAD_LETTER`` out: a confirmed,
mandatory copy to a delay queue ``<queue>.retry.<ms>`` or to the dead-letter queue, both
with headers from the one builder :func:`~hutch._dead_letter.failure_headers`, then the
ack of the original. What really happened is a :class:`~hutch._dead_letter.Disposition`
(see :mod:`hutch._dead_letter`): a retry that cannot be placed at all becomes a dead
letter, a copy that cannot be placed leaves the original to be requeued after a pause.
"""

from __future__ import annotations

import enum
import logging
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from hutch._amqp import ChannelApi, Delivery, OutgoingMessage, to_pika_properties
from hutch._connection import Connection
from hutch._dead_letter import (
    REQUEUE_DELAY,
    DeadLetters,
    Disposition,
    failure_headers,
    publish_to_queue,
    requeue_later,
)
from hutch._delay import DELAY_QUEUE_GRACE, DelayQueues
from hutch._exceptions import HutchError
from hutch._retry import RetryPolicy
from hutch._topology import Queue
from hutch._worker_pool.outcome import Outcome, OutcomeKind

__all__ = [
    "DELAY_QUEUE_GRACE",
    "Decision",
    "FailureRouter",
    "Route",
    "decide",
    "retryable",
]

log = logging.getLogger("hutch")


class Route(enum.Enum):
    """What happens to a message after an attempt."""

    #: Acked: the handler succeeded.
    ACK = "ack"
    #: Handed back to the broker at once (``basic.nack(requeue=True)``).
    REQUEUE = "requeue"
    #: A copy to a delay queue, back in the work queue after :attr:`Decision.delay`.
    RETRY = "retry"
    #: A copy to the dead-letter queue.
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class Decision:
    """The route of a message, with what the copy needs.

    Attributes:
        route: Where the message goes.
        reason: The reason recorded in the copy's ``x-hutch-error`` header.
        delay: For ``RETRY``: seconds before the next attempt.
    """

    route: Route
    reason: str = ""
    delay: float | None = None


def retryable(outcome: Outcome) -> bool:
    """Whether another attempt could succeed (ignoring the attempt count and the policy).

    Args:
        outcome: The attempt's outcome.

    Returns:
        True for ``RETRY`` and ``CRASH``, and for an ``ERROR`` listed in ``retry_on``.
    """
    kind = outcome.kind
    if kind is OutcomeKind.RETRY or kind is OutcomeKind.CRASH:
        return True
    return kind is OutcomeKind.ERROR and outcome.retryable


def decide(
    outcome: Outcome, *, attempt: int, redelivered: bool, policy: RetryPolicy | None
) -> Decision:
    """Route a message after attempt number ``attempt`` (pure; see the module's table).

    Args:
        outcome: What the attempt came to.
        attempt: The attempt that just ended, 1 for the first.
        redelivered: The broker's ``redelivered`` flag on the delivery.
        policy: The pool's retry policy; None dead-letters every failure at once.

    Returns:
        The decision.

    Raises:
        ValueError: ``attempt`` is below 1.
    """
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    if outcome.kind is OutcomeKind.OK:
        return Decision(Route.ACK)
    if outcome.kind is OutcomeKind.CRASH and attempt == 1 and not redelivered:
        # the first crash on a fresh message: give it back so any worker can take it
        # (with redelivered=True); if it crashes a worker again it is retried with
        # backoff like any failure, so a message that kills workers cannot loop hot
        return Decision(Route.REQUEUE, outcome.reason)
    if not retryable(outcome) or policy is None:
        return Decision(Route.DEAD_LETTER, outcome.reason)
    if attempt < policy.max_attempts:
        delay = outcome.delay if outcome.delay is not None else policy.delay_for(attempt)
        return Decision(Route.RETRY, outcome.reason, delay)
    return Decision(Route.DEAD_LETTER, f"{outcome.reason} (gave up after {attempt} attempts)")


class _CannotRetry(Exception):
    """No delay queue can take the copy: dead-letter the message instead."""


class FailureRouter:
    """Carries out ``RETRY`` and ``DEAD_LETTER`` decisions for one work queue (internal).

    Thread-safe: the workers of a pool share one. Opens a confirm channel for retries (if
    there is a policy) and one for dead letters (:class:`~hutch._dead_letter.DeadLetters`).

    Args:
        connection: The pool's connection.
        queue: The work queue.
        dead_letter_queue: Where failed messages go.
        retry: The retry policy; None means no delay queues.
        timeout: Seconds allowed for each declaration and publish confirm.
    """

    def __init__(
        self,
        connection: Connection,
        queue: Queue,
        dead_letter_queue: Queue,
        retry: RetryPolicy | None,
        timeout: float,
    ) -> None:
        self._conn = connection
        self.queue = queue
        self.dead_letter_queue = dead_letter_queue
        self.retry = retry
        self.timeout = timeout
        self._retry_channel: ChannelApi | None = None
        self._dead: DeadLetters | None = None
        self._delays = DelayQueues(self._declare_delay_queue, kind="retry")
        #: Where retried copies go back to: ``""`` (the default exchange, by the work
        #: queue's name) or a partitioned queue's consistent-hash exchange.
        self.retry_exchange = ""

    @property
    def delay_queues(self) -> tuple[str, ...]:
        """Names of the delay queues declared for retries so far."""
        return self._delays.names

    def open(self) -> None:
        """Declare the dead-letter queue and open the channels."""
        self._dead = DeadLetters(self._conn, self.dead_letter_queue, self.queue.name)
        self._dead.declare()
        if self.retry is not None:
            self._retry_channel = self._conn.channel(confirms=True)

    def close(self, timeout: float) -> None:
        """Close the channels.

        Args:
            timeout: Seconds allowed for closing the retry channel.
        """
        if self._retry_channel is not None:
            self._retry_channel.close(timeout=timeout)
        if self._dead is not None:
            self._dead.close()

    def send(
        self, delivery: Delivery, attempt: int, outcome: Outcome, decision: Decision
    ) -> Disposition:
        """Carry out a ``RETRY`` or ``DEAD_LETTER`` decision; the original is acked or requeued.

        Args:
            delivery: The message.
            attempt: The attempt that just failed.
            outcome: What it came to.
            decision: From :func:`decide`: ``RETRY`` or ``DEAD_LETTER``.

        Returns:
            What really happened: a copy the broker did not confirm is no dead letter.
        """
        reason = decision.reason
        if decision.route is Route.RETRY:
            assert decision.delay is not None
            try:
                return self._retry_later(
                    delivery, attempt, decision.delay, outcome.error_type, reason
                )
            except _CannotRetry as exc:
                reason = f"{reason} (retry impossible: {exc})"
        return self._dead_letter(delivery, attempt, outcome.error_type, reason)

    def _dead_letter(
        self, delivery: Delivery, attempt: int, error_type: str, reason: str
    ) -> Disposition:
        assert self._dead is not None
        try:
            return self._dead.send(
                delivery,
                reason=reason,
                error_type=error_type,
                attempts=attempt,
                timeout=self.timeout,
            )
        except Exception:
            log.exception(
                "hutch: dead-lettering failed; requeueing the message in %.0f s", REQUEUE_DELAY
            )
            requeue_later(delivery, pending=self._dead.pending)
            return Disposition.REQUEUED

    def _delay_queue(self, delay: float, *, again: bool = False) -> str:
        """Declare (or renew) the delay queue for ``delay`` seconds; return its name.

        With ``again``, declare it even if it was declared recently (it was deleted).
        """
        ms = max(1, round(delay * 1000))
        durable = bool(self.queue.durable)
        return self._delays.queue_for(
            self.retry_exchange, self.queue.name, ms, durable=durable, again=again
        )

    def _declare_delay_queue(self, queue: Queue) -> None:
        assert self._retry_channel is not None
        self._retry_channel.declare([queue], timeout=self.timeout)

    def _retry_channel_now(self) -> ChannelApi:
        assert self._retry_channel is not None
        return self._retry_channel

    def _retry_later(
        self, delivery: Delivery, attempt: int, delay: float, error_type: str, reason: str
    ) -> Disposition:
        """Publish a copy to a delay queue, then ack the original.

        The copy carries hutch's own attempt count and none of RabbitMQ's ``x-death``
        headers (``failure_headers(..., retry_of=queue)``); it is mandatory and
        confirmed, and a deleted delay queue is declared again.

        Returns:
            ``RETRIED``; ``REQUEUED`` when the copy could not be placed (the original is
            requeued after a pause).

        Raises:
            _CannotRetry: No delay queue can be declared, or the message's properties
                cannot be sent again (the caller dead-letters the message instead).
        """
        try:
            target = self._delay_queue(delay)
        except HutchError as exc:
            log.error("hutch: cannot declare the delay queue for a retry (%s); dead-lettering", exc)
            raise _CannotRetry(str(exc)) from exc
        try:
            props = delivery.properties
            headers = failure_headers(
                props.headers,
                reason=reason,
                error_type=error_type,
                attempts=attempt,
                retry_of=self.queue.name,
            )
            out = props.merged(headers=headers, delivery_mode=2, expiration=None)
            pika_props = to_pika_properties(out)
        except (ValueError, TypeError, OverflowError) as exc:
            # properties hutch cannot send again: retrying cannot work, dead-letter it
            raise _CannotRetry(str(exc)) from exc

        def build() -> OutgoingMessage:
            return OutgoingMessage("", target, delivery.body, pika_props, mandatory=True)

        def redeclare() -> None:
            self._delay_queue(delay, again=True)

        log.info(
            "hutch: retrying message %s of queue %r in %.3f s (attempt %d failed: %s: %s)",
            out.message_id,
            self.queue.name,
            delay,
            attempt,
            error_type,
            reason,
        )
        try:
            publish_to_queue(self._retry_channel_now, target, build, redeclare, self.timeout)
        except (HutchError, FutureTimeout, OSError) as exc:
            log.error(
                "hutch: could not publish a retry (%s); requeueing the message in %.0f s",
                exc,
                REQUEUE_DELAY,
            )
            requeue_later(delivery, pending=self._dead.pending if self._dead else None)
            return Disposition.REQUEUED
        delivery.ack()
        return Disposition.RETRIED
