"""Trace context through a real RabbitMQ, to and from plain pika programs.

The patterns are not wired to hutch._telemetry yet, so these tests carry the messages with
plain pika (the "foreign" programs of the issue) and put hutch's spans around them exactly
where the patterns will: what is checked is that a ``traceparent`` survives RabbitMQ's
header tables both ways and that one trace spans publish -> handler -> RPC -> server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pika
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from tests.otel_support import Otel, otel

__all__ = ["otel"]

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.rabbitmq_only("interop with plain pika programs"),
]


@pytest.fixture
def channel(amqp_url: str, unique_name: str) -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = connection.channel()
    queues = [f"{unique_name}-work", f"{unique_name}-rpc"]
    for queue in queues:
        ch.queue_declare(queue, auto_delete=False)
    try:
        yield ch
    finally:
        for queue in queues:
            ch.queue_delete(queue)
        connection.close()


def _send(ch: Any, queue: str, body: bytes, headers: dict[str, Any] | None) -> None:
    ch.basic_publish("", queue, body, pika.BasicProperties(headers=headers))


def _take(ch: Any, queue: str) -> tuple[Any, Any, bytes]:
    for _ in range(200):
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        ch.connection.sleep(0.01)
    raise AssertionError(f"nothing arrived on {queue}")


def test_a_plain_pika_producer_continues_into_a_hutch_handler(
    otel: Otel, channel: Any, unique_name: str
) -> None:
    queue = f"{unique_name}-work"
    foreign = TracerProvider().get_tracer("plain-pika-service")
    with foreign.start_as_current_span("checkout", kind=SpanKind.PRODUCER) as upstream:
        headers: dict[str, Any] = {"app": "shop"}
        propagate.inject(headers)  # what opentelemetry-instrumentation-pika does
        _send(channel, queue, b"{}", headers)
    method, props, body = _take(channel, queue)
    with otel.telemetry.process_span(
        queue=queue,
        exchange=method.exchange,
        routing_key=method.routing_key,
        headers=props.headers,
        body_size=len(body),
        redelivered=method.redelivered,
    ):
        pass
    span = otel.span(f"process {queue}")
    context = upstream.get_span_context()
    assert span.context.trace_id == context.trace_id
    assert span.parent is not None and span.parent.span_id == context.span_id
    assert [link.context.span_id for link in span.links] == [context.span_id]


def test_a_hutch_publisher_continues_into_a_plain_pika_consumer(
    otel: Otel, channel: Any, unique_name: str
) -> None:
    queue = f"{unique_name}-work"
    with otel.telemetry.publish_span(exchange="", routing_key=queue, body_size=2) as scope:
        _send(channel, queue, b"{}", scope.inject({"app": "shop"}))
    _, props, _ = _take(channel, queue)
    assert props.headers["app"] == "shop"
    # what a plain OpenTelemetry consumer does with the delivered headers
    remote = trace.get_current_span(propagate.extract(props.headers)).get_span_context()
    producer = otel.span("publish amq.default")
    assert remote.is_valid and remote.is_remote
    assert (remote.trace_id, remote.span_id) == (
        producer.context.trace_id,
        producer.context.span_id,
    )


def test_one_trace_from_publish_through_a_handler_and_an_rpc_call(
    otel: Otel, channel: Any, unique_name: str
) -> None:
    work, rpc = f"{unique_name}-work", f"{unique_name}-rpc"
    tel = otel.telemetry
    with tel.publish_span(exchange="", routing_key=work) as scope:
        _send(channel, work, b"job", scope.inject(None))

    method, props, _ = _take(channel, work)  # the WorkerPool's delivery
    with tel.process_span(
        queue=work, exchange="", routing_key=method.routing_key, headers=props.headers
    ):
        # the handler calls a procedure: RpcClient.call
        with tel.rpc_client_span(procedure="price", service=rpc, correlation_id="c1") as call:
            _send(channel, rpc, b"req", call.inject(None))
            _, request, _ = _take(channel, rpc)  # the RpcServer's delivery
            with tel.rpc_server_span(
                procedure="price", service=rpc, headers=request.headers, correlation_id="c1"
            ) as served:
                # the reply goes back with the server's context
                _send(channel, rpc, b"reply", served.inject(None))
            _take(channel, rpc)

    spans = {s.name: s for s in otel.spans()}
    producer = spans["publish amq.default"]
    consumer = spans[f"process {work}"]
    client = next(s for s in otel.spans() if s.kind is SpanKind.CLIENT)
    server = next(s for s in otel.spans() if s.kind is SpanKind.SERVER)
    assert {s.context.trace_id for s in otel.spans()} == {producer.context.trace_id}
    assert [s.kind for s in (producer, consumer, client, server)] == [
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.CLIENT,
        SpanKind.SERVER,
    ]
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert client.parent is not None and client.parent.span_id == consumer.context.span_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert server.parent.is_remote  # it came through the broker, not the thread's context
