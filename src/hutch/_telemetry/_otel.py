"""The OpenTelemetry-backed telemetry; imported only when opentelemetry-api is importable.

Spans follow the OpenTelemetry messaging semantic conventions (``messaging.system =
rabbitmq``; span names ``{operation} {destination}``; ``messaging.operation.type`` send /
process / settle; ``messaging.destination.name`` the exchange, as the RabbitMQ conventions
say) and, for RPC, the RPC conventions (``rpc.service`` / ``rpc.method``, client and
server kinds). Trace context travels as W3C ``traceparent`` / ``tracestate`` message
headers, as ``opentelemetry-instrumentation-pika`` and FastStream put it, so traces cross
to and from programs that use either.

Nothing here may break messaging: header values that are not text are ignored when
extracting, and an invalid ``traceparent`` just starts a new trace.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from hutch._exceptions import RemoteError
from hutch._telemetry import (
    ACKED_METRIC,
    CONFIRMED_METRIC,
    CONSUMED_METRIC,
    DEAD_LETTERED_METRIC,
    IN_HAND_METRIC,
    LOSSES_METRIC,
    NACKED_METRIC,
    NOOP_SCOPE,
    PROCESS_DURATION_METRIC,
    PUBLISH_DURATION_METRIC,
    RECOVERIES_METRIC,
    REQUEUED_METRIC,
    RETRIED_METRIC,
    RETURNED_METRIC,
    RPC_CLIENT_DURATION_METRIC,
    RPC_SERVER_DURATION_METRIC,
    SENT_METRIC,
    PublishOutcome,
    Scope,
    Settlement,
    Telemetry,
)

if TYPE_CHECKING:
    from contextvars import Token
    from types import TracebackType

    from opentelemetry.metrics import Counter, Histogram, UpDownCounter
    from opentelemetry.util.types import AttributeValue

__all__ = ["OtelTelemetry"]

try:
    _VERSION = version("hutch")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = "0.0.0"

_SCHEMA_URL = "https://opentelemetry.io/schemas/1.27.0"
# the semantic conventions' advice for durations in seconds
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
_MAX_REASON = 256  # a span event's reason; the full text is in the dead letter's headers
_DEFAULT_EXCHANGE = "amq.default"  # what the span name says for the default exchange ""

SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
SUBSCRIPTION = "messaging.destination.subscription.name"
ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
DELIVERY_TAG = "messaging.rabbitmq.message.delivery_tag"
MESSAGE_ID = "messaging.message.id"
CONVERSATION_ID = "messaging.message.conversation_id"
BODY_SIZE = "messaging.message.body.size"
BATCH_COUNT = "messaging.batch.message_count"
CLIENT_ID = "messaging.client.id"
ERROR_TYPE = "error.type"
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
REDELIVERED = "hutch.redelivered"
ATTEMPT = "hutch.attempt"
SETTLEMENT = "hutch.settlement"
REASON = "hutch.reason"
DELAY = "hutch.retry.delay"
REMOTE_ERROR_TYPE = "hutch.rpc.remote_error.type"

_EVENT_NAMES = {
    Settlement.REQUEUED: "hutch.requeue",
    Settlement.RETRIED: "hutch.retry",
    Settlement.DEAD_LETTERED: "hutch.dead_letter",
}


class _HeaderGetter(Getter[Mapping[str, object]]):
    """Reads trace context from AMQP headers: text or UTF-8 bytes; anything else is absent."""

    def get(self, carrier: Mapping[str, object], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, str):
            return [value]
        if isinstance(value, bytes):
            return [value.decode("utf-8", "replace")]
        return None

    def keys(self, carrier: Mapping[str, object]) -> list[str]:
        return [k for k in carrier if isinstance(k, str)]


_GETTER = _HeaderGetter()


def _error_type(exc: BaseException) -> str:
    return type(exc).__qualname__


try:  # the API's own globals, where this version has them: a module attribute each to read
    from opentelemetry.metrics import _internal as _metrics_globals

    _GLOBALS = hasattr(trace, "_TRACER_PROVIDER") and hasattr(_metrics_globals, "_METER_PROVIDER")
except ImportError:  # pragma: no cover
    _GLOBALS = False


def _provider_set() -> bool:
    """Whether the application has set a global tracer or meter provider (an SDK).

    Until then the global API hands out no-op proxies: a span records nothing and a metric
    goes nowhere. Read per call, since the application may set them after ``connect()``.
    """
    if _GLOBALS:
        return trace._TRACER_PROVIDER is not None or _metrics_globals._METER_PROVIDER is not None
    # pragma: no cover - an opentelemetry-api without those globals
    tracing = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return tracing or type(metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider"


class _Instruments:
    """The connection's instruments, created once from its meter."""

    def __init__(self, meter: metrics.Meter) -> None:
        def counter(name: str, description: str, unit: str = "{message}") -> Counter:
            return meter.create_counter(name, unit=unit, description=description)

        def seconds(name: str, description: str) -> Histogram:
            return meter.create_histogram(
                name,
                unit="s",
                description=description,
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            )

        self.sent = counter(SENT_METRIC, "Messages the producer tried to send")
        self.publish_duration = seconds(PUBLISH_DURATION_METRIC, "Duration of publishing")
        self.consumed = counter(CONSUMED_METRIC, "Messages delivered to a handler")
        self.process_duration = seconds(PROCESS_DURATION_METRIC, "Duration of a handler")
        self.rpc_client_duration = seconds(RPC_CLIENT_DURATION_METRIC, "RPC call duration")
        self.rpc_server_duration = seconds(RPC_SERVER_DURATION_METRIC, "RPC procedure duration")
        self.published: dict[PublishOutcome, Counter] = {
            PublishOutcome.CONFIRMED: counter(CONFIRMED_METRIC, "Messages the broker confirmed"),
            PublishOutcome.NACKED: counter(NACKED_METRIC, "Messages the broker nacked"),
            PublishOutcome.RETURNED: counter(RETURNED_METRIC, "Messages returned unroutable"),
        }
        self.settled: dict[Settlement, Counter] = {
            Settlement.ACKED: counter(ACKED_METRIC, "Messages acked after their handler"),
            Settlement.REQUEUED: counter(REQUEUED_METRIC, "Messages put back on their queue"),
            Settlement.RETRIED: counter(RETRIED_METRIC, "Messages scheduled for a retry"),
            Settlement.DEAD_LETTERED: counter(DEAD_LETTERED_METRIC, "Messages dead-lettered"),
        }
        self.in_hand: UpDownCounter = meter.create_up_down_counter(
            IN_HAND_METRIC, unit="{message}", description="Messages a handler is working on"
        )
        self.losses = counter(LOSSES_METRIC, "Connections lost", "{event}")
        self.recoveries = counter(RECOVERIES_METRIC, "Connections recovered", "{event}")


class _Span(Scope):
    """A live span: started on ``__enter__``, current inside the block, ended on exit."""

    __slots__ = (
        "_attributes",
        "_duration",
        "_error_type",
        "_in_hand",
        "_kind",
        "_links",
        "_metric_attributes",
        "_name",
        "_parent",
        "_span",
        "_start",
        "_telemetry",
        "_token",
        "_unit_count",
        "_units",
        "redelivered",
    )

    def __init__(
        self,
        telemetry: OtelTelemetry,
        name: str,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        metric_attributes: dict[str, AttributeValue],
        duration: Histogram,
        *,
        parent: otel_context.Context | None = None,
        links: list[Link] | None = None,
        units: Counter | None = None,
        unit_count: int = 1,
        in_hand: bool = False,
    ) -> None:
        self._telemetry = telemetry
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._metric_attributes = metric_attributes
        self._duration = duration
        self._parent = parent
        self._links = links
        self._units = units
        self._unit_count = unit_count
        self._in_hand = in_hand
        self._error_type: str | None = None
        self._span: trace.Span = trace.INVALID_SPAN
        self._token: Token[otel_context.Context] | None = None
        self._start = 0.0
        self.redelivered = False

    def __enter__(self) -> _Span:
        self._span = self._telemetry.tracer.start_span(
            self._name,
            context=self._parent,
            kind=self._kind,
            attributes=self._attributes,
            links=self._links,
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span, self._parent))
        if self.redelivered:
            self._span.add_event(
                "hutch.redelivered", {REASON: "the broker delivered it before; it was not acked"}
            )
        if self._in_hand:
            self._telemetry.instruments.in_hand.add(1, self._metric_attributes)
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self._start
        if exc is not None:
            self.fail(exc)
        if self._token is not None:
            otel_context.detach(self._token)
        self._span.end()
        attributes = self._metric_attributes
        if self._in_hand:
            self._telemetry.instruments.in_hand.add(-1, attributes)
        if self._error_type is not None:
            attributes = {**attributes, ERROR_TYPE: self._error_type}
        if self._units is not None:
            self._units.add(self._unit_count, attributes)
        self._duration.record(elapsed, attributes)

    def inject(self, headers: dict[str, Any] | None) -> dict[str, Any] | None:
        carrier: dict[str, Any] = dict(headers) if headers else {}
        context = trace.set_span_in_context(self._span)
        self._telemetry.propagator().inject(carrier, context=context)
        return carrier if carrier or headers is not None else None

    def fail(self, exc: BaseException) -> None:
        error_type = _error_type(exc)
        self._error_type = error_type
        span = self._span
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{error_type}: {exc}"[:_MAX_REASON]))
        span.set_attribute(ERROR_TYPE, error_type)
        if isinstance(exc, RemoteError):
            span.set_attribute(REMOTE_ERROR_TYPE, exc.type_name)

    def settle(
        self,
        outcome: Settlement,
        *,
        reason: str | None = None,
        error_type: str | None = None,
        attempt: int | None = None,
        delay: float | None = None,
    ) -> None:
        self._span.set_attribute(SETTLEMENT, outcome.value)
        name = _EVENT_NAMES.get(outcome)
        if name is not None:
            attributes: dict[str, AttributeValue] = {}
            if reason is not None:
                attributes[REASON] = reason[:_MAX_REASON]
            if error_type is not None:
                attributes[ERROR_TYPE] = error_type
            if attempt is not None:
                attributes[ATTEMPT] = attempt
            if delay is not None:
                attributes[DELAY] = delay
            self._span.add_event(name, attributes)
        attrs = self._metric_attributes
        if error_type is not None and outcome is not Settlement.ACKED:
            attrs = {**attrs, ERROR_TYPE: error_type}
        self._telemetry.instruments.settled[outcome].add(1, attrs)

    def event(self, name: str, attributes: Mapping[str, str | int | float | bool]) -> None:
        self._span.add_event(name, dict(attributes))


class OtelTelemetry(Telemetry):
    """Telemetry through the OpenTelemetry API (see :class:`hutch._telemetry.Telemetry`)."""

    enabled = True

    def __init__(
        self,
        *,
        connection_name: str | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        # get_tracer / get_meter on the global API return proxies until the application
        # sets its providers, and follow them once it has: the order does not matter
        if tracer_provider is None:
            self.tracer = trace.get_tracer("hutch", _VERSION, schema_url=_SCHEMA_URL)
        else:
            self.tracer = tracer_provider.get_tracer("hutch", _VERSION, schema_url=_SCHEMA_URL)
        if meter_provider is None:
            meter = metrics.get_meter("hutch", _VERSION, schema_url=_SCHEMA_URL)
        else:
            meter = meter_provider.get_meter("hutch", _VERSION, schema_url=_SCHEMA_URL)
        self.instruments = _Instruments(meter)
        self._propagator = propagator
        # given providers, or ones the environment names (loaded at first use), are live
        self._live = (
            tracer_provider is not None
            or meter_provider is not None
            or "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
            or "OTEL_PYTHON_METER_PROVIDER" in os.environ
        )
        self._fields_of: TextMapPropagator | None = None
        self._fields: frozenset[str] = frozenset()
        # spans name the connection; metrics do not (no series per connection name)
        self._base: dict[str, AttributeValue] = {SYSTEM: "rabbitmq"}
        if connection_name:
            self._base[CLIENT_ID] = connection_name

    def propagator(self) -> TextMapPropagator:
        """The propagator: the one given, else the global one (read at each use)."""
        return self._propagator if self._propagator is not None else propagate.get_global_textmap()

    def _idle(self, headers: Mapping[str, object] | None = None) -> bool:
        """Nothing to record or pass on: no SDK provider, no current context, no trace headers.

        With opentelemetry-api alone a span is a no-op, but the API still passes a trace on
        (an incoming ``traceparent`` becomes the current context, which outgoing messages
        carry, and so does baggage): only when there is nothing of the kind is the span work
        skipped, which saves a few microseconds per message.
        """
        if self._live:
            return False
        if _provider_set():
            self._live = True  # a provider, once set, stays set
            return False
        if otel_context.get_current():
            return False
        if headers:
            textmap = self.propagator()
            if textmap is not self._fields_of:
                self._fields = frozenset(textmap.fields)
                self._fields_of = textmap
            return self._fields.isdisjoint(headers)
        return True

    def _extract(
        self, headers: Mapping[str, object] | None
    ) -> tuple[otel_context.Context | None, list[Link] | None]:
        if not headers:
            return None, None
        try:
            parent = self.propagator().extract(headers, getter=_GETTER)
        except Exception:  # a propagator must not raise; a custom one might, on hostile input
            return None, None
        remote = trace.get_current_span(parent).get_span_context()
        if not remote.is_valid:
            return None, None
        return parent, [Link(remote)]

    @staticmethod
    def _message(
        attributes: dict[str, AttributeValue],
        message_id: str | None,
        correlation_id: str | None,
        body_size: int | None,
    ) -> dict[str, AttributeValue]:
        if message_id is not None:
            attributes[MESSAGE_ID] = message_id
        if correlation_id is not None:
            attributes[CONVERSATION_ID] = correlation_id
        if body_size is not None:
            attributes[BODY_SIZE] = body_size
        return attributes

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
        if self._idle():
            return NOOP_SCOPE
        metric_attributes: dict[str, AttributeValue] = {
            SYSTEM: "rabbitmq",
            OPERATION_NAME: "publish",
            DESTINATION: exchange,
        }
        attributes = {**self._base, **metric_attributes, OPERATION_TYPE: "send"}
        if routing_key:
            attributes[ROUTING_KEY] = routing_key
        if batch_size != 1:
            attributes[BATCH_COUNT] = batch_size
        return _Span(
            self,
            f"publish {exchange or _DEFAULT_EXCHANGE}",
            SpanKind.PRODUCER,
            self._message(attributes, message_id, correlation_id, body_size),
            metric_attributes,
            self.instruments.publish_duration,
            units=self.instruments.sent,
            unit_count=batch_size,
        )

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
        if self._idle(headers):
            return NOOP_SCOPE
        metric_attributes: dict[str, AttributeValue] = {
            SYSTEM: "rabbitmq",
            OPERATION_NAME: "process",
            SUBSCRIPTION: queue,
        }
        attributes = {
            **self._base,
            **metric_attributes,
            OPERATION_TYPE: "process",
            DESTINATION: exchange,
        }
        if routing_key:
            attributes[ROUTING_KEY] = routing_key
        if delivery_tag is not None:
            attributes[DELIVERY_TAG] = delivery_tag
        if redelivered:
            attributes[REDELIVERED] = True
        if attempt is not None:
            attributes[ATTEMPT] = attempt
        parent, links = self._extract(headers)
        self.instruments.consumed.add(1, metric_attributes)
        span = _Span(
            self,
            f"process {queue}",
            SpanKind.CONSUMER,
            self._message(attributes, message_id, correlation_id, body_size),
            metric_attributes,
            self.instruments.process_duration,
            parent=parent,
            links=links,
            in_hand=True,
        )
        span.redelivered = redelivered
        return span

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
        if self._idle():
            return NOOP_SCOPE
        metric_attributes: dict[str, AttributeValue] = {
            SYSTEM: "rabbitmq",
            RPC_SYSTEM: "hutch",
            RPC_SERVICE: service,
            RPC_METHOD: procedure,
        }
        attributes = {
            **self._base,
            **metric_attributes,
            OPERATION_TYPE: "send",
            OPERATION_NAME: "publish",
            DESTINATION: exchange,
            ROUTING_KEY: service,
        }
        return _Span(
            self,
            f"{service}/{procedure}" if procedure else service,
            SpanKind.CLIENT,
            self._message(attributes, message_id, correlation_id, body_size),
            metric_attributes,
            self.instruments.rpc_client_duration,
        )

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
        if self._idle(headers):
            return NOOP_SCOPE
        metric_attributes: dict[str, AttributeValue] = {
            SYSTEM: "rabbitmq",
            RPC_SYSTEM: "hutch",
            RPC_SERVICE: service,
            RPC_METHOD: procedure,
        }
        attributes = {
            **self._base,
            **metric_attributes,
            OPERATION_TYPE: "process",
            OPERATION_NAME: "process",
            SUBSCRIPTION: service,
        }
        parent, _links = self._extract(headers)
        return _Span(
            self,
            f"{service}/{procedure}" if procedure else service,
            SpanKind.SERVER,
            self._message(attributes, message_id, correlation_id, body_size),
            metric_attributes,
            self.instruments.rpc_server_duration,
            parent=parent,
        )

    def record_publish_outcome(
        self, exchange: str, outcome: PublishOutcome, count: int = 1
    ) -> None:
        self.instruments.published[outcome].add(count, {SYSTEM: "rabbitmq", DESTINATION: exchange})

    def record_settlement(
        self, queue: str, outcome: Settlement, count: int = 1, *, error_type: str | None = None
    ) -> None:
        attributes: dict[str, AttributeValue] = {
            SYSTEM: "rabbitmq",
            OPERATION_NAME: "process",
            SUBSCRIPTION: queue,
        }
        if error_type is not None and outcome is not Settlement.ACKED:
            attributes[ERROR_TYPE] = error_type
        self.instruments.settled[outcome].add(count, attributes)

    def on_connection_event(self, event: str, error: BaseException | None) -> None:
        if event == "lost":
            attributes: dict[str, AttributeValue] = {SYSTEM: "rabbitmq"}
            if error is not None:
                attributes[ERROR_TYPE] = _error_type(error)
            self.instruments.losses.add(1, attributes)
        elif event == "restored":
            self.instruments.recoveries.add(1, {SYSTEM: "rabbitmq"})
