"""Confirm batches: :class:`ConfirmBatch` (``Publisher.batch()``) and :class:`BatchResult`.

A batch publishes a stream of messages with their confirms pipelined and settles them all
when its ``with`` block is left; :class:`BatchResult` is the outcome of that and of
``Publisher.publish_many``. The publish telemetry helpers (producer span, trace-context
injection, outcome counters) live here too, shared by single publishes and batches.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from hutch._amqp import SEND_EVERY, Batch, ChannelApi, OutgoingMessage
from hutch._exceptions import ClosedError, Nacked, OperationTimeout, PublishError, Unroutable
from hutch._telemetry import PublishOutcome, Scope, Telemetry

if TYPE_CHECKING:
    from typing_extensions import Self

    from hutch._publisher import Publisher
    from hutch._topology import FieldValue

__all__ = ["BatchResult", "ConfirmBatch"]

T = TypeVar("T")


@dataclass
class BatchResult:
    """The outcome of :meth:`Publisher.publish_many`.

    Attributes:
        message_ids: The message id of every message, in order.
        failed: ``(index, error)`` for every message that was nacked, returned or lost.
    """

    message_ids: list[str] = field(default_factory=list)
    failed: list[tuple[int, PublishError]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if every message was confirmed."""
        return not self.failed

    @property
    def confirmed(self) -> int:
        """How many messages were confirmed."""
        return len(self.message_ids) - len(self.failed)

    def raise_for_failures(self) -> None:
        """Raise the first failure, if any.

        Raises:
            PublishError: The first message that was not confirmed.
        """
        if self.failed:
            raise self.failed[0][1]


# ----------------------------------------------------------------- telemetry (when on)
# Called only when ``connection.telemetry.enabled``: the hot path without telemetry pays
# one attribute test per publish (or per batch), nothing else.
def _inject(span: Scope, message: OutgoingMessage) -> None:
    """Put the span's W3C trace context into the message's headers."""
    props = message.properties
    headers = props.headers
    props.headers = span.inject(dict(headers) if headers is not None else None)


def _publish_span(tel: Telemetry, message: OutgoingMessage, batch_size: int = 1) -> Scope:
    one = batch_size == 1  # a batch's span names no single message
    return tel.publish_span(
        exchange=message.exchange,
        routing_key=message.routing_key,
        message_id=message.message_id if one else None,
        correlation_id=message.properties.correlation_id if one else None,
        body_size=len(message.body) if one else None,
        batch_size=batch_size,
    )


def _outcome(exc: BaseException | None) -> PublishOutcome | None:
    if exc is None:
        return PublishOutcome.CONFIRMED
    if isinstance(exc, Unroutable):
        return PublishOutcome.RETURNED
    if isinstance(exc, Nacked):
        return PublishOutcome.NACKED
    return None  # lost, timed out...: the broker said nothing


def _count_outcome(tel: Telemetry, exchange: str, exc: BaseException | None) -> None:
    outcome = _outcome(exc)
    if outcome is not None:
        tel.record_publish_outcome(exchange, outcome)


def _count_batch(tel: Telemetry, exchange: str, result: BatchResult) -> None:
    if result.confirmed:
        tel.record_publish_outcome(exchange, PublishOutcome.CONFIRMED, result.confirmed)
    for _index, error in result.failed:
        _count_outcome(tel, exchange, error)


class ConfirmBatch(Generic[T]):
    """A confirm-batch context from :meth:`Publisher.batch` (see there).

    Use it from one thread. After the ``with`` block, :attr:`result` holds the outcome.
    Entering or leaving it on the connection's I/O thread (in a future's done-callback,
    say), where waiting for confirms would hang, raises :class:`~hutch.PublishError` at once.
    """

    def __init__(
        self,
        publisher: Publisher[T],
        routing_key: str | None,
        headers: Mapping[str, FieldValue] | None,
        timeout: float | None,
        max_in_flight: int,
        properties: dict[str, Any],
    ) -> None:
        self._pub = publisher
        self._routing_key = routing_key
        self._headers = headers
        self._timeout = publisher.timeout if timeout is None else timeout
        self._max = max_in_flight
        self._properties = properties
        self._batch = Batch(sealed=False)
        self._buffer: list[OutgoingMessage] = []
        self._ids: list[str] = []
        self._channel: ChannelApi | None = None
        #: The outcome, once the ``with`` block is left.
        self.result: BatchResult | None = None

    def __enter__(self) -> Self:
        ch = self._pub._ensure_channel()
        self._check_may_wait(ch)  # before anything is sent
        self._channel = ch
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._channel is not None:
            self._check_may_wait(self._channel)
        self._send(window=False)
        self._batch.seal()
        ch = self._channel if self._channel is not None else self._pub._ensure_channel()
        self.result = self._pub._settle_batch(ch, self._batch, self._ids, self._timeout)
        tel = self._pub._conn.telemetry
        if tel.enabled and self._pub.confirm:
            _count_batch(tel, self._pub.exchange_name, self.result)

    def publish(
        self,
        body: T,
        *,
        routing_key: str | None = None,
        headers: Mapping[str, FieldValue] | None = None,
    ) -> str:
        """Add a message to the batch (it goes out soon; its confirm is awaited on exit).

        Args:
            body: The body.
            routing_key: Overrides the batch's routing key.
            headers: Overrides the batch's headers.

        Returns:
            The message id.

        Raises:
            ClosedError: Used outside its ``with`` block.
            OperationTimeout: No room in the window within the timeout.
        """
        if self._channel is None or self.result is not None:
            raise ClosedError("publish into a batch inside its with block")
        m = self._pub._build(
            body,
            self._routing_key if routing_key is None else routing_key,
            self._headers if headers is None else headers,
            None,
            self._properties,
            self._batch,
            len(self._ids),
        )
        self._batch.add()
        self._ids.append(m.message_id or "")
        self._buffer.append(m)
        if len(self._buffer) >= SEND_EVERY:
            self._send(window=True)
        return m.message_id or ""

    def _check_may_wait(self, ch: ChannelApi) -> None:
        """Refuse at once to wait for confirms on the connection's I/O thread (it would hang)."""
        reason = ch.blocking_refused(
            "a batch",
            "publish the batch from another thread, or use publish_async() there and do not "
            "wait on its futures",
        )
        if reason is not None:
            raise PublishError(reason, exchange=self._pub.exchange_name)

    def _send(self, *, window: bool) -> None:
        ch = self._channel
        if ch is None:
            return
        if self._buffer:
            messages, self._buffer = self._buffer, []
            ch.wait_unblocked()
            tel = self._pub._conn.telemetry
            if not tel.enabled:
                ch.publish_many(messages, direct=True)
            else:  # one producer span per chunk sent
                with _publish_span(tel, messages[0], len(messages)) as span:
                    for m in messages:
                        _inject(span, m)
                    ch.publish_many(messages, direct=True)
        if window and self._batch.unsettled >= self._max:
            # the window is full: read confirms (on this thread if it can) until there is room
            started = time.monotonic()
            ch.pump_until(lambda: self._batch.unsettled < self._max, self._timeout)
            left = max(0.0, self._timeout - (time.monotonic() - started))
            if not self._batch.wait_below(self._max, left):
                raise OperationTimeout(
                    f"{self._batch.unsettled} messages of the batch not confirmed within "
                    f"{self._timeout} s"
                )
