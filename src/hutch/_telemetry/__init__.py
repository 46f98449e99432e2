"""Telemetry: OpenTelemetry traces and metrics for every pattern, free when unused.

A :class:`Telemetry` belongs to one connection. The patterns call it at five places
(publish, process, settle, RPC call, RPC handle) and the connection tells it about losses
and recoveries. Two implementations share one interface:

- this module's :class:`Telemetry` does nothing: every method returns at once and the span
  methods return one shared, stateless :class:`Scope`. It is what a connection gets when
  ``opentelemetry-api`` is not importable or ``tracing=False``; then no ``opentelemetry``
  module is imported at all (a test checks ``sys.modules`` in a fresh interpreter);
- ``hutch._telemetry._otel.OtelTelemetry`` (imported only by :func:`create_telemetry`)
  uses the *global* tracer provider, meter provider and propagator, so an application
  configures OpenTelemetry once, as it does for everything else, and changes nothing in
  its hutch code. Tests pass their own providers instead of touching the globals.

Where each call goes (the patterns' side of the contract)::

    Publisher.publish / publish_many / RpcServer reply
        with tel.publish_span(exchange=..., routing_key=..., message_id=...,
                              correlation_id=..., body_size=len(body)) as span:
            headers = span.inject(headers)        # W3C traceparent / tracestate
            ... send, wait for the confirm ...
        tel.record_publish_outcome(exchange, PublishOutcome.CONFIRMED)   # confirm callback

    Subscriber / WorkerPool handler (in the thread or process that runs the handler)
        with tel.process_span(queue=..., exchange=msg.exchange, routing_key=...,
                              headers=msg.headers, redelivered=msg.redelivered, ...) as span:
            try:
                handler(msg)
            except Exception as exc:
                span.fail(exc)
                span.settle(Settlement.RETRIED, reason=str(exc), error_type=..., attempt=2,
                            delay=5.0)            # or DEAD_LETTERED / REQUEUED
            else:
                span.settle(Settlement.ACKED)

    RpcClient.call                                RpcServer, per request
        with tel.rpc_client_span(...) as span:    with tel.rpc_server_span(headers=...) as span:
            headers = span.inject(headers)            result = procedure(...)
            ... send, wait for the reply ...

    Connection
        connection.add_listener(tel.on_connection_event)   # losses and recoveries

Metric names (OpenTelemetry semantic conventions where they exist, ``hutch.*`` for the
rest) are the ``*_METRIC`` constants below and the table in ``docs/observability.md``.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from types import TracebackType

    from hutch._amqp.properties import Delivery

__all__ = [
    "ACKED_METRIC",
    "CONFIRMED_METRIC",
    "CONSUMED_METRIC",
    "DEAD_LETTERED_METRIC",
    "IN_HAND_METRIC",
    "LOSSES_METRIC",
    "NACKED_METRIC",
    "NOOP_SCOPE",
    "NOOP_TELEMETRY",
    "PROCESS_DURATION_METRIC",
    "PUBLISH_DURATION_METRIC",
    "RECOVERIES_METRIC",
    "REQUEUED_METRIC",
    "RETRIED_METRIC",
    "RETURNED_METRIC",
    "RPC_CLIENT_DURATION_METRIC",
    "RPC_SERVER_DURATION_METRIC",
    "SENT_METRIC",
    "PublishOutcome",
    "Scope",
    "Settlement",
    "Telemetry",
    "attached_trace_context",
    "create_telemetry",
    "current_trace_context",
]

log = logging.getLogger("hutch")

# ------------------------------------------------------------------------- metric names
#: Messages the producer tried to send (one per message, a batch counts its size).
SENT_METRIC = "messaging.client.sent.messages"
#: Duration of a publish: from the call until sent (and confirmed, when it waits).
PUBLISH_DURATION_METRIC = "messaging.client.operation.duration"
#: Messages delivered to a handler.
CONSUMED_METRIC = "messaging.client.consumed.messages"
#: Duration of a handler.
PROCESS_DURATION_METRIC = "messaging.process.duration"
#: Duration of an RPC call as the client sees it (``error.type`` on failure).
RPC_CLIENT_DURATION_METRIC = "rpc.client.call.duration"
#: Duration of an RPC procedure on the server.
RPC_SERVER_DURATION_METRIC = "rpc.server.call.duration"
CONFIRMED_METRIC = "hutch.messages.confirmed"
NACKED_METRIC = "hutch.messages.nacked"
RETURNED_METRIC = "hutch.messages.returned"
ACKED_METRIC = "hutch.messages.acked"
REQUEUED_METRIC = "hutch.messages.requeued"
RETRIED_METRIC = "hutch.messages.retried"
DEAD_LETTERED_METRIC = "hutch.messages.dead_lettered"
#: Messages a handler is working on right now (an up-down counter).
IN_HAND_METRIC = "hutch.messages.in_hand"
LOSSES_METRIC = "hutch.connection.losses"
RECOVERIES_METRIC = "hutch.connection.recoveries"


class PublishOutcome(enum.Enum):
    """What the broker did with a published message (counted by ``record_publish_outcome``)."""

    CONFIRMED = "confirmed"
    NACKED = "nacked"
    RETURNED = "returned"


class Settlement(enum.Enum):
    """How a delivered message was settled (counted, and a span event on its process span)."""

    ACKED = "acked"
    REQUEUED = "requeued"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"


class Scope:
    """The span a pattern is inside: a context manager, used by one thread.

    This base class is the no-op scope: one shared instance serves every call, so a
    disabled telemetry allocates nothing. Leaving the ``with`` block by an exception records
    it on the span (and as ``error.type`` on the duration metric) and lets it propagate.
    """

    __slots__ = ()

    def __enter__(self) -> Scope:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def inject(self, headers: dict[str, Any] | None) -> dict[str, Any] | None:
        """Put this span's W3C trace context into outgoing headers.

        Args:
            headers: The message's application headers (``None`` for none). Not changed.

        Returns:
            ``headers`` unchanged when telemetry is off; otherwise a new dict with
            ``traceparent`` (and ``tracestate`` when there is one) added.
        """
        return headers

    def fail(self, exc: BaseException) -> None:
        """Record an exception the pattern caught (a handler's, a procedure's, a call's).

        Args:
            exc: The exception; its type name becomes ``error.type``.
        """

    def settle(
        self,
        outcome: Settlement,
        *,
        reason: str | None = None,
        error_type: str | None = None,
        attempt: int | None = None,
        delay: float | None = None,
    ) -> None:
        """Count how the message was settled and, but for an ack, add a span event.

        Args:
            outcome: Acked, requeued, retried or dead-lettered.
            reason: Why it was not acked (e.g. the exception's message).
            error_type: The exception's type name.
            attempt: For a retry: the number of the attempt it is scheduled for.
            delay: For a retry: seconds until it is tried again.
        """

    def event(self, name: str, attributes: Mapping[str, str | int | float | bool]) -> None:
        """Add a span event.

        Args:
            name: The event's name, e.g. ``"hutch.reconnect"``.
            attributes: Its attributes.
        """


_NOOP_SCOPE = Scope()
#: The shared no-op scope, for a pattern to pass where it has no span.
NOOP_SCOPE = _NOOP_SCOPE


class Telemetry:
    """A connection's telemetry; this base class is the no-op one.

    Every method may be called from any thread. Methods that open a span return a
    :class:`Scope` to use in a ``with`` statement on the calling thread: the span is the
    current span inside the block, so whatever the block publishes or calls is its child.

    Attributes:
        enabled: False here; True when spans and metrics are recorded. Patterns may test it
            to skip work done only for telemetry.
    """

    enabled = False

    def publish_span(
        self,
        *,
        exchange: str,
        routing_key: str,
        message_id: str | None = None,
        correlation_id: str | None = None,
        body_size: int | None = None,
        batch_size: int = 1,
    ) -> Scope:
        """A producer span ``publish <exchange>`` around one publish (or one batch).

        Inject its context into the message headers with :meth:`Scope.inject`. On leaving
        it counts ``batch_size`` messages sent and records the publish duration.

        Args:
            exchange: The exchange (``""`` for the default exchange).
            routing_key: The routing key.
            message_id: The message id property.
            correlation_id: The correlation id (``messaging.message.conversation_id``).
            body_size: The encoded body's length in bytes.
            batch_size: Messages sent under this span (``publish_many``).

        Returns:
            The scope.
        """
        return _NOOP_SCOPE

    def process_span(
        self,
        *,
        queue: str,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, object] | None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        body_size: int | None = None,
        redelivered: bool = False,
        delivery_tag: int | None = None,
        attempt: int | None = None,
    ) -> Scope:
        """A consumer span ``process <queue>`` around one handler call.

        Its parent is the context found in ``headers`` (a hutch publisher's, or any program
        that puts a W3C ``traceparent`` there); it also links to it. It counts the delivery,
        holds one message "in hand" while open and records the handler's duration.

        Args:
            queue: The queue consumed from.
            exchange: The exchange the message was published to.
            routing_key: The routing key it was published with.
            headers: The message's application headers, as delivered.
            message_id: The message id property.
            correlation_id: The correlation id property.
            body_size: The body's length in bytes.
            redelivered: The broker's redelivered flag (adds a ``hutch.redelivered`` event).
            delivery_tag: The delivery tag.
            attempt: hutch's attempt number (``x-hutch-attempts``), when known.

        Returns:
            The scope.
        """
        return _NOOP_SCOPE

    def delivery_span(self, delivery: Delivery, queue: str, attempt: int | None = None) -> Scope:
        """:meth:`process_span` for ``delivery``: its exchange, routing key, headers and properties.

        Args:
            delivery: The message as delivered.
            queue: The queue it was consumed from.
            attempt: hutch's attempt number (``x-hutch-attempts``), when known.

        Returns:
            The scope.
        """
        props = delivery.properties
        return self.process_span(
            queue=queue,
            exchange=delivery.exchange,
            routing_key=delivery.routing_key,
            headers=delivery.headers,
            message_id=props.message_id,
            correlation_id=props.correlation_id,
            body_size=len(delivery.body),
            redelivered=delivery.redelivered,
            delivery_tag=delivery.delivery_tag,
            attempt=attempt,
        )

    def rpc_client_span(
        self,
        *,
        procedure: str,
        service: str,
        exchange: str = "",
        correlation_id: str | None = None,
        message_id: str | None = None,
        body_size: int | None = None,
    ) -> Scope:
        """A client span ``<service>/<procedure>`` around one RPC call, send to reply.

        Inject its context into the request's headers with :meth:`Scope.inject`: the
        server's span becomes its child. Records the call duration (``error.type`` when the
        call raised or :meth:`Scope.fail` was called).

        Args:
            procedure: The procedure's name (``""`` for a server's default).
            service: The server's queue (the request's routing key).
            exchange: The exchange the request is published to.
            correlation_id: The request's correlation id.
            message_id: The request's message id.
            body_size: The request body's length in bytes.

        Returns:
            The scope.
        """
        return _NOOP_SCOPE

    def rpc_server_span(
        self,
        *,
        procedure: str,
        service: str,
        headers: Mapping[str, object] | None,
        correlation_id: str | None = None,
        message_id: str | None = None,
        body_size: int | None = None,
    ) -> Scope:
        """A server span ``<service>/<procedure>`` around one request, child of the caller's.

        Args:
            procedure: The procedure called.
            service: The queue the server consumes.
            headers: The request's application headers, as delivered.
            correlation_id: The request's correlation id.
            message_id: The request's message id.
            body_size: The request body's length in bytes.

        Returns:
            The scope.
        """
        return _NOOP_SCOPE

    def record_publish_outcome(
        self, exchange: str, outcome: PublishOutcome, count: int = 1
    ) -> None:
        """Count confirmed, nacked or returned messages (from the confirm/return callbacks).

        Args:
            exchange: The exchange they were published to.
            outcome: What the broker did.
            count: How many messages (a multiple confirm covers several).
        """

    def record_settlement(
        self, queue: str, outcome: Settlement, count: int = 1, *, error_type: str | None = None
    ) -> None:
        """Count settled messages outside a process span (e.g. acks coalesced later).

        Args:
            queue: The queue they came from.
            outcome: How they were settled.
            count: How many.
            error_type: For retries and dead letters: the exception's type name.
        """

    def on_connection_event(self, event: str, error: BaseException | None) -> None:
        """A :meth:`hutch.Connection.add_listener` listener counting losses and recoveries.

        Args:
            event: ``"lost"``, ``"restored"``, ``"failed"`` or ``"closed"``.
            error: The error that came with it.
        """


NOOP_TELEMETRY = Telemetry()


def create_telemetry(
    enabled: bool = True,
    *,
    connection_name: str | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    propagator: Any = None,
) -> Telemetry:
    """The telemetry for one connection.

    Args:
        enabled: False (``connect(..., tracing=False)``) gives the no-op telemetry without
            importing OpenTelemetry.
        connection_name: Reported as ``messaging.client.id``.
        tracer_provider: An ``opentelemetry.trace.TracerProvider``; the global one if None.
        meter_provider: An ``opentelemetry.metrics.MeterProvider``; the global one if None.
        propagator: An ``opentelemetry.propagators.textmap.TextMapPropagator``; the global
            one (W3C trace context and baggage by default) if None.

    Returns:
        The OpenTelemetry-backed telemetry, or :data:`NOOP_TELEMETRY` when disabled or when
        ``opentelemetry-api`` is not installed.
    """
    if not enabled:
        return NOOP_TELEMETRY
    try:
        from hutch._telemetry._otel import OtelTelemetry
    except ImportError as exc:  # opentelemetry-api is not installed: the optional extra
        log.debug("hutch: telemetry off, opentelemetry-api cannot be imported: %s", exc)
        return NOOP_TELEMETRY
    return OtelTelemetry(
        connection_name=connection_name,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        propagator=propagator,
    )


# ---------------------------------------------------- trace context for worker processes
def current_trace_context() -> dict[str, str] | None:
    """The current trace context as W3C headers, to hand to a worker process.

    Free without OpenTelemetry: when no ``opentelemetry`` module was ever imported there is
    no context to carry, and nothing is imported.

    Returns:
        ``traceparent`` (and ``tracestate`` / ``baggage``) strings, or None when there is
        no valid current span.
    """
    if "opentelemetry" not in sys.modules:
        return None
    try:
        from hutch._telemetry._hop import current_carrier
    except ImportError:  # pragma: no cover - a partial opentelemetry install
        return None
    return current_carrier()


def attached_trace_context(carrier: object) -> AbstractContextManager[object]:
    """A context manager that makes ``carrier``'s trace context current (worker side).

    Args:
        carrier: What :func:`current_trace_context` gave in the parent (from JSON), or None.

    Returns:
        The context manager; a do-nothing one without a carrier or without OpenTelemetry.
    """
    if not carrier or not isinstance(carrier, Mapping):
        return _NULL_CONTEXT
    headers = {k: v for k, v in carrier.items() if isinstance(k, str) and isinstance(v, str)}
    try:
        from hutch._telemetry._hop import attached
    except ImportError:  # the parent had opentelemetry, this interpreter has not
        return _NULL_CONTEXT
    return attached(headers)


_NULL_CONTEXT: AbstractContextManager[object] = contextlib.nullcontext()
