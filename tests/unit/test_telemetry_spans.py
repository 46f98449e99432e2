"""Spans: names, kinds, messaging attributes, parents and links, W3C headers both ways."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hutch import RemoteError, RpcTimeout
from hutch._telemetry import Settlement
from tests.otel_support import Otel, make_otel, otel

__all__ = ["otel"]  # the fixture, re-exported for pytest


def _traceparent(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def test_publish_span_follows_the_messaging_conventions(otel: Otel) -> None:
    with otel.telemetry.publish_span(
        exchange="orders",
        routing_key="order.created",
        message_id="m-1",
        correlation_id="c-1",
        body_size=42,
    ) as scope:
        headers = scope.inject({"x-app": "shop"})
    span = otel.span("publish orders")
    assert span.kind is SpanKind.PRODUCER
    assert span.parent is None
    assert dict(span.attributes or {}) == {
        "messaging.system": "rabbitmq",
        "messaging.client.id": "test-conn",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "orders",
        "messaging.rabbitmq.destination.routing_key": "order.created",
        "messaging.message.id": "m-1",
        "messaging.message.conversation_id": "c-1",
        "messaging.message.body.size": 42,
    }
    assert headers == {"x-app": "shop", "traceparent": _traceparent(span)}


def test_default_exchange_and_batch(otel: Otel) -> None:
    with otel.telemetry.publish_span(exchange="", routing_key="", batch_size=5):
        pass
    span = otel.span("publish amq.default")
    attrs = dict(span.attributes or {})
    assert attrs["messaging.destination.name"] == ""
    assert "messaging.rabbitmq.destination.routing_key" not in attrs  # only when not empty
    assert attrs["messaging.batch.message_count"] == 5


def test_inject_copies_and_overwrites_a_stale_traceparent(otel: Otel) -> None:
    stale = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    original = {"traceparent": stale, "n": 1}
    with otel.telemetry.publish_span(exchange="x", routing_key="k") as scope:
        out = scope.inject(original)
        none_in = scope.inject(None)
    assert original == {"traceparent": stale, "n": 1}  # not changed in place
    assert out is not None and out["traceparent"] != stale and out["n"] == 1
    assert none_in == {"traceparent": out["traceparent"]}


def test_process_span_is_child_of_the_producer_and_links_it(otel: Otel) -> None:
    with otel.telemetry.publish_span(exchange="", routing_key="jobs") as scope:
        headers = scope.inject(None)
    with otel.telemetry.process_span(
        queue="jobs",
        exchange="",
        routing_key="jobs",
        headers=headers,
        message_id="m",
        correlation_id="c",
        body_size=3,
        delivery_tag=7,
        attempt=2,
    ):
        pass
    producer, consumer = otel.span("publish amq.default"), otel.span("process jobs")
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == producer.context.trace_id
    assert [link.context.span_id for link in consumer.links] == [producer.context.span_id]
    attrs = dict(consumer.attributes or {})
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.destination.subscription.name"] == "jobs"
    assert attrs["messaging.rabbitmq.message.delivery_tag"] == 7
    assert attrs["messaging.message.conversation_id"] == "c"
    assert attrs["hutch.attempt"] == 2
    assert "hutch.redelivered" not in attrs
    assert not consumer.events


def test_a_plain_opentelemetry_traceparent_continues(otel: Otel) -> None:
    # what opentelemetry-instrumentation-pika does: propagate.inject into the headers dict
    upstream = TracerProvider().get_tracer("someone-else")
    headers: dict[str, Any] = {}
    with upstream.start_as_current_span("http request") as outer:
        propagate.inject(headers)
    with otel.telemetry.process_span(queue="q", exchange="", routing_key="q", headers=headers):
        pass
    span = otel.span("process q")
    assert span.parent is not None and span.parent.is_remote
    assert span.parent.span_id == outer.get_span_context().span_id
    assert span.context.trace_id == outer.get_span_context().trace_id


def test_plain_opentelemetry_reads_what_hutch_injects(otel: Otel) -> None:
    with otel.telemetry.publish_span(exchange="e", routing_key="r") as scope:
        headers = scope.inject(None)
    assert headers is not None
    remote = trace.get_current_span(propagate.extract(headers)).get_span_context()
    assert remote.span_id == otel.span("publish e").context.span_id


def test_tracestate_travels_and_bytes_values_are_read(otel: Otel) -> None:
    parent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    headers = {"traceparent": parent.encode(), "tracestate": b"vendor=abc"}
    with otel.telemetry.process_span(queue="q", exchange="", routing_key="q", headers=headers):
        with otel.telemetry.publish_span(exchange="", routing_key="next") as scope:
            out = scope.inject(None)
    consumer = otel.span("process q")
    assert consumer.parent is not None and consumer.parent.trace_id == int("1" * 32, 16)
    assert out is not None and out["tracestate"] == "vendor=abc"


def test_the_process_span_is_current_inside_the_block(otel: Otel) -> None:
    with otel.telemetry.process_span(queue="q", exchange="", routing_key="q", headers=None):
        with otel.telemetry.publish_span(exchange="out", routing_key=""):
            pass
        inner = trace.get_current_span().get_span_context()
    assert not trace.get_current_span().get_span_context().is_valid  # restored afterwards
    consumer, producer = otel.span("process q"), otel.span("publish out")
    assert consumer.parent is None and not consumer.links  # no headers: a new trace
    assert inner.span_id == consumer.context.span_id
    assert producer.parent is not None and producer.parent.span_id == consumer.context.span_id


def test_a_handler_exception_is_recorded_and_propagates(otel: Otel) -> None:
    with pytest.raises(KeyError):
        with otel.telemetry.process_span(queue="q", exchange="", routing_key="q", headers=None):
            raise KeyError("sku-9")
    span = otel.span("process q")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "KeyError"
    assert [e.name for e in span.events] == ["exception"]
    assert dict(span.events[0].attributes or {})["exception.type"] == "KeyError"


def test_fail_records_an_exception_the_pattern_caught(otel: Otel) -> None:
    with otel.telemetry.process_span(
        queue="q", exchange="", routing_key="q", headers=None
    ) as scope:
        try:
            raise ValueError("bad order")
        except ValueError as exc:
            scope.fail(exc)
    span = otel.span("process q")
    assert span.status.status_code is StatusCode.ERROR
    assert "bad order" in (span.status.description or "")
    assert dict(span.attributes or {})["error.type"] == "ValueError"


def test_settlements_become_span_events_with_their_reason(otel: Otel) -> None:
    outcomes = [
        (Settlement.RETRIED, "hutch.retry"),
        (Settlement.DEAD_LETTERED, "hutch.dead_letter"),
        (Settlement.REQUEUED, "hutch.requeue"),
    ]
    for outcome, _ in outcomes:
        with otel.telemetry.process_span(
            queue=outcome.value, exchange="", routing_key="", headers=None
        ) as scope:
            scope.settle(outcome, reason="x" * 1000, error_type="ValueError", attempt=3, delay=2.5)
    with otel.telemetry.process_span(
        queue="ok", exchange="", routing_key="", headers=None
    ) as scope:
        scope.settle(Settlement.ACKED)
    for outcome, event_name in outcomes:
        span = otel.span(f"process {outcome.value}")
        assert dict(span.attributes or {})["hutch.settlement"] == outcome.value
        (event,) = span.events
        assert event.name == event_name
        attrs = dict(event.attributes or {})
        assert attrs["error.type"] == "ValueError"
        assert attrs["hutch.attempt"] == 3 and attrs["hutch.retry.delay"] == 2.5
        assert attrs["hutch.reason"] == "x" * 256  # cut short: the whole text is in the headers
    acked = otel.span("process ok")
    assert dict(acked.attributes or {})["hutch.settlement"] == "acked"
    assert not acked.events


def test_a_redelivery_is_an_event(otel: Otel) -> None:
    with otel.telemetry.process_span(
        queue="q", exchange="", routing_key="q", headers=None, redelivered=True
    ):
        pass
    span = otel.span("process q")
    assert dict(span.attributes or {})["hutch.redelivered"] is True
    assert [e.name for e in span.events] == ["hutch.redelivered"]


def test_rpc_client_span_is_the_parent_of_the_server_span(otel: Otel) -> None:
    with otel.telemetry.rpc_client_span(
        procedure="add", service="calc", correlation_id="c-9", body_size=10
    ) as scope:
        request_headers = scope.inject(None)
        with otel.telemetry.rpc_server_span(
            procedure="add", service="calc", headers=request_headers, correlation_id="c-9"
        ):
            pass
    (server,) = [s for s in otel.spans() if s.kind is SpanKind.SERVER]
    (client,) = [s for s in otel.spans() if s.kind is SpanKind.CLIENT]
    assert client.name == server.name == "calc/add"
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    for span in (client, server):
        attrs = dict(span.attributes or {})
        assert attrs["rpc.system"] == "hutch"
        assert attrs["rpc.service"] == "calc" and attrs["rpc.method"] == "add"
        assert attrs["messaging.message.conversation_id"] == "c-9"


def test_rpc_errors_are_typed(otel: Otel) -> None:
    with pytest.raises(RpcTimeout):
        with otel.telemetry.rpc_client_span(procedure="slow", service="calc"):
            raise RpcTimeout("no reply")
    with otel.telemetry.rpc_client_span(procedure="div", service="calc") as scope:
        scope.fail(RemoteError("ZeroDivisionError", "division by zero"))
    slow, div = otel.span("calc/slow"), otel.span("calc/div")
    assert dict(slow.attributes or {})["error.type"] == "RpcTimeout"
    attrs = dict(div.attributes or {})
    assert attrs["error.type"] == "RemoteError"
    assert attrs["hutch.rpc.remote_error.type"] == "ZeroDivisionError"


def test_the_given_propagator_is_used() -> None:
    rig = make_otel()
    from hutch._telemetry import create_telemetry

    class Upper(TraceContextTextMapPropagator):
        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            super().inject(carrier, context)
            carrier["X-Traced"] = "yes"

    tel = create_telemetry(tracer_provider=rig.tracer_provider, propagator=Upper())
    with tel.publish_span(exchange="", routing_key="") as scope:
        out = scope.inject(None)
    assert out is not None and out["X-Traced"] == "yes" and "traceparent" in out


_field_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=80)
    | st.binary(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_traceparents = st.one_of(
    _field_values,
    st.from_regex(r"\A[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z"),
    st.from_regex(r"\A00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]\Z").map(str.encode),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.dictionaries(st.text(max_size=12), _field_values, max_size=5),
    traceparent=_traceparents,
    tracestate=_field_values,
)
def test_hostile_headers_never_break_a_handler(
    headers: dict[str, Any], traceparent: Any, tracestate: Any
) -> None:
    rig = make_otel()
    headers = {**headers, "traceparent": traceparent, "tracestate": tracestate}
    with rig.telemetry.process_span(queue="q", exchange="", routing_key="q", headers=headers):
        pass
    with rig.telemetry.rpc_server_span(procedure="p", service="s", headers=headers):
        pass
    text = traceparent.decode("utf-8", "replace") if isinstance(traceparent, bytes) else traceparent
    spans = rig.spans()
    if not spans:  # a valid parent that says "not sampled": the SDK records nothing
        assert isinstance(text, str) and int(text.strip()[53:55], 16) & 1 == 0
        return
    assert sorted(s.name for s in spans) == ["process q", "s/p"]
    for span in spans:
        if span.parent is not None:  # continued: the ids come from the header, nowhere else
            assert isinstance(text, str)
            assert f"{span.parent.trace_id:032x}" in text
            assert f"{span.parent.span_id:016x}" in text
            assert span.context.trace_id == span.parent.trace_id
    rig.tracer_provider.shutdown()
    rig.meter_provider.shutdown()
