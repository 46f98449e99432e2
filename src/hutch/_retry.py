"""The failure policy of a work queue: retry with backoff, then dead-letter.

Pure logic, no I/O: :class:`RetryPolicy` says which failures are retried, how often and
after how long; :class:`Retry` and :class:`Reject` are the signals a handler raises to
decide for itself. :class:`~hutch.WorkerPool` applies them with broker-side delay queues,
so a waiting retry never occupies a worker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hutch._checks import MAX_TIMEOUT, check_float, check_int

__all__ = ["ATTEMPTS_HEADER", "RETRY_OF_HEADER", "Reject", "Retry", "RetryPolicy", "attempts_made"]

#: Header counting how many times a message has been handled and failed.
ATTEMPTS_HEADER = "x-hutch-attempts"
#: Header naming the work queue a retry is for: only with it is ``x-hutch-attempts`` hutch's own.
RETRY_OF_HEADER = "x-hutch-retry-of"
# an attempt count read from a header is capped here (a huge value means "many")
_MAX_COUNT = 1_000_000


class Retry(Exception):
    """Raised by a handler to ask for the message to be tried again later.

    The message is retried even if the exception that caused it is not in
    :attr:`RetryPolicy.retry_on`, but never more than :attr:`RetryPolicy.max_attempts`
    times in all; after the last attempt it goes to the dead-letter queue.

    ``Retry`` and :class:`Reject` are control flow a handler uses on purpose, not errors
    hutch raises, so they derive from :class:`Exception` directly rather than from
    :class:`~hutch.HutchError`.

    Args:
        delay: Seconds to wait before the next attempt; None uses the policy's backoff.
        reason: Why, recorded in the ``x-hutch-error`` header.

    Raises:
        TypeError: ``delay`` is not a number (pass the text as ``reason=``).
        ValueError: ``delay`` is negative or not finite.

    Example:
        >>> def handle(order):  # doctest: +SKIP
        ...     if not inventory.ready():
        ...         raise Retry(delay=30, reason="inventory is syncing")
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        if delay is not None:
            if isinstance(delay, bool) or not isinstance(delay, (int, float)):
                raise TypeError(
                    f"Retry(delay=...) takes seconds as a number, got {type(delay).__name__}; "
                    "pass an explanation as Retry(reason=...)"
                )
            if not math.isfinite(delay) or not 0 <= delay <= MAX_TIMEOUT:
                raise ValueError(
                    f"Retry delay must be a finite number of seconds >= 0 and at most "
                    f"{MAX_TIMEOUT} (RabbitMQ's longest message TTL), got {delay!r}"
                )
        super().__init__(reason or "retry requested by the handler")
        self.delay: float | None = None if delay is None else float(delay)
        self.reason = reason or "retry requested by the handler"


class Reject(Exception):
    """Raised by a handler to send the message straight to the dead-letter queue.

    Use it for messages that can never succeed (a reference to a deleted record, a
    request the business rules refuse): no retry is attempted. Like :class:`Retry` it is
    control flow and derives from :class:`Exception`, not :class:`~hutch.HutchError`.

    Args:
        reason: Why, recorded in the ``x-hutch-error`` header.

    Example:
        >>> def handle(order):  # doctest: +SKIP
        ...     if order.total < 0:
        ...         raise Reject("negative total")
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason or "rejected by the handler")
        self.reason = reason or "rejected by the handler"


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a failed message with exponential backoff, then dead-letter it.

    A message whose handler raises an exception listed in ``retry_on`` (or
    :class:`Retry`) is published again, with its attempt count in the
    ``x-hutch-attempts`` header, to a broker-side delay queue whose TTL sends it back to
    the work queue after the delay; the worker moves on at once. After ``max_attempts``
    attempts, or for an exception not in ``retry_on``, or for :class:`Reject`, the message
    goes to the dead-letter queue with ``x-hutch-error``, ``x-hutch-error-type`` and
    ``x-hutch-attempts`` headers. Bodies that cannot be decoded or validated are
    dead-lettered at once: retrying cannot fix them.

    The delay before attempt ``n + 1`` is ``backoff * multiplier ** (n - 1)`` seconds,
    capped at ``max_delay``.

    Attributes:
        max_attempts: Attempts in all, the first included (1 means never retry).
        backoff: Seconds before the first retry.
        multiplier: Growth factor of the delay from one retry to the next.
        max_delay: Upper bound of any delay, in seconds.
        retry_on: Exception types worth retrying; others are dead-lettered at once.

    Raises:
        ValueError: A non-positive count or delay, or ``max_delay < backoff``.
        TypeError: ``retry_on`` holds something that is not an exception type.

    Example:
        >>> RetryPolicy(max_attempts=4, backoff=1, multiplier=3).delays()
        [1.0, 3.0, 9.0]
    """

    max_attempts: int = 3
    backoff: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 300.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        # (attempts in all, the first included; 1 means: never retry)
        check_int("max_attempts", self.max_attempts, 1)
        # a delay is a message TTL on the delay queue: RabbitMQ takes at most 2**32-1 ms
        check_float("backoff", self.backoff, high=MAX_TIMEOUT)
        check_float("multiplier", self.multiplier)
        check_float("max_delay", self.max_delay, high=MAX_TIMEOUT)
        if self.backoff < 0.001:
            raise ValueError(
                "backoff must be at least 0.001 s: a retry goes through a delay queue, "
                "and a zero delay would let a failing message loop hot"
            )
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1 (delays never shrink)")
        if self.max_delay < self.backoff:
            raise ValueError(f"max_delay ({self.max_delay}) must be >= backoff ({self.backoff})")
        retry_on: Any = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        if not isinstance(retry_on, (tuple, list, frozenset, set)):
            raise TypeError("retry_on must be a tuple of exception types, e.g. (TimeoutError,)")
        for cls in retry_on:
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                raise TypeError(f"retry_on must hold exception types, got {cls!r}")
        object.__setattr__(self, "retry_on", tuple(retry_on))
        object.__setattr__(self, "backoff", float(self.backoff))
        object.__setattr__(self, "multiplier", float(self.multiplier))
        object.__setattr__(self, "max_delay", float(self.max_delay))

    def delay_for(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Args:
            attempt: The attempt that just failed (1 for the first).

        Returns:
            The delay before the next attempt.

        Raises:
            ValueError: ``attempt`` is below 1.
        """
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        # compare in log space so huge attempt numbers cannot overflow
        if self.multiplier > 1 and (attempt - 1) * math.log(self.multiplier) > math.log(
            self.max_delay / self.backoff
        ):
            return self.max_delay
        return min(self.max_delay, self.backoff * self.multiplier ** (attempt - 1))

    def delays(self) -> list[float]:
        """The delays before the 2nd, 3rd, ... attempt (``max_attempts - 1`` of them).

        Returns:
            The delays in seconds.
        """
        return [self.delay_for(n) for n in range(1, self.max_attempts)]

    def should_retry(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a failure worth another attempt (ignoring the attempt count).

        Args:
            exc: What the handler raised.

        Returns:
            True for :class:`Retry` and the types in ``retry_on``; False for :class:`Reject`.
        """
        if isinstance(exc, Reject):
            return False
        return isinstance(exc, (Retry, *self.retry_on))


def attempts_made(headers: Mapping[str, Any] | None, queue: str) -> int:
    """How many attempts a message has already had on ``queue``.

    The count is hutch's own: ``x-hutch-attempts`` is read only when ``x-hutch-retry-of``
    names ``queue``, which is what a worker pool writes when it sends a failed message to
    its delay queue. Anything else is a fresh message with 0 attempts: a copy replayed from
    the dead-letter queue, a message from another program carrying ``x-hutch-*`` headers
    of its own, or values of the wrong type (RabbitMQ's ``x-death`` is never consulted).

    Args:
        headers: The message's headers (any values; nothing here raises).
        queue: The work queue the message was consumed from.

    Returns:
        The count, from 0 to 1,000,000.
    """
    if not headers:
        return 0
    try:
        marker = headers.get(RETRY_OF_HEADER)
        value = headers.get(ATTEMPTS_HEADER)
    except Exception:  # a mapping that is not a dict: treat as no headers
        return 0
    if isinstance(marker, bytes):
        marker = marker.decode("utf-8", "replace")
    if not isinstance(marker, str) or marker != queue:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return min(max(0, value), _MAX_COUNT)
