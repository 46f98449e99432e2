"""What one attempt at a task came to: :class:`OutcomeKind` and the :class:`Outcome` record.

An outcome says what the *handler* did (or what stopped it from running); what happens to
the message next is decided from it by :func:`hutch._worker_pool.routing.decide`.
Outcomes cross the process boundary as JSON (see :mod:`hutch._worker_pool.process`):
the enum's values are the strings on the wire.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hutch._message import Message
from hutch._retry import Reject, Retry

__all__ = ["MAX_REASON", "OK", "Outcome", "OutcomeKind", "call_handler"]

log = logging.getLogger("hutch")

#: Longest reason carried by an outcome across the process boundary.
MAX_REASON = 2000


class OutcomeKind(enum.Enum):
    """What one attempt came to (the values are what a worker process sends back)."""

    #: The handler returned.
    OK = "ok"
    #: The body or a property/header could not be decoded or validated: no attempt can work.
    INVALID = "invalid"
    #: The handler raised :class:`~hutch.Reject`.
    REJECT = "reject"
    #: The handler raised :class:`~hutch.Retry`.
    RETRY = "retry"
    #: The handler raised another exception.
    ERROR = "error"
    #: The worker process running the handler died.
    CRASH = "crash"


@dataclass(frozen=True)
class Outcome:
    """One attempt's outcome.

    Attributes:
        kind: What happened.
        error_type: The exception's type name (empty for ``OK``).
        reason: One line saying why it failed (empty for ``OK``).
        delay: For ``RETRY``: the delay the handler asked for, or None for the backoff.
        retryable: For ``ERROR``: the exception is one of the policy's ``retry_on``.
    """

    kind: OutcomeKind
    error_type: str = ""
    reason: str = ""
    delay: float | None = None
    retryable: bool = False

    def to_json(self) -> bytes:
        """Encode for the pipe from a worker process.

        Returns:
            The JSON bytes.
        """
        return json.dumps(
            {
                "kind": self.kind.value,
                "error_type": self.error_type,
                "reason": self.reason[:MAX_REASON],
                "delay": self.delay,
                "retryable": self.retryable,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Outcome:
        """Decode what :meth:`to_json` wrote.

        Args:
            data: The JSON bytes.

        Returns:
            The outcome.

        Raises:
            ValueError: Not JSON, or an unknown kind.
        """
        raw = json.loads(data)
        delay = raw.get("delay")
        return cls(
            kind=OutcomeKind(raw["kind"]),
            error_type=str(raw.get("error_type", "")),
            reason=str(raw.get("reason", "")),
            delay=float(delay) if isinstance(delay, (int, float)) else None,
            retryable=bool(raw.get("retryable", False)),
        )


OK = Outcome(OutcomeKind.OK)


def call_handler(
    handler: Callable[..., object],
    call_with_message: bool,
    message: Message[Any],
    retry_on: tuple[type[BaseException], ...],
) -> Outcome:
    """Run the handler and classify what happened (worker thread or worker process).

    Args:
        handler: The task handler.
        call_with_message: Call it as ``handler(body, message)`` rather than ``handler(body)``.
        message: The decoded message.
        retry_on: Exception types the retry policy retries.

    Returns:
        The outcome.
    """
    try:
        if call_with_message:
            handler(message.body, message)
        else:
            handler(message.body)
    except Reject as exc:
        return Outcome(OutcomeKind.REJECT, "Reject", exc.reason)
    except Retry as exc:
        return Outcome(OutcomeKind.RETRY, "Retry", exc.reason, delay=exc.delay, retryable=True)
    except Exception as exc:
        log.debug("hutch: handler raised", exc_info=True)
        return Outcome(
            OutcomeKind.ERROR,
            type(exc).__name__,
            str(exc) or type(exc).__name__,
            retryable=isinstance(exc, retry_on),
        )
    return OK
