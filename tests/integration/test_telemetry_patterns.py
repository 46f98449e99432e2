"""Telemetry wired into the patterns, against a real RabbitMQ (issue 13).

Each test gives its connection a telemetry on SDK providers with an in-memory span exporter
and metric reader (``tests.otel_support``), so no global provider is touched; the patterns
read ``connection.telemetry`` exactly as they do with the global one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind

from hutch import (
    Connection,
    Message,
    Publisher,
    Queue,
    RetryPolicy,
    RpcClient,
    RpcServer,
    Subscriber,
    Unroutable,
    WorkerPool,
)
from hutch._telemetry import (
    ACKED_METRIC,
    CONFIRMED_METRIC,
    CONSUMED_METRIC,
    DEAD_LETTERED_METRIC,
    NOOP_TELEMETRY,
    RETRIED_METRIC,
    RETURNED_METRIC,
    SENT_METRIC,
)
from tests.otel_support import Otel, make_otel
from tests.waits import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def rig() -> Iterator[Otel]:
    otel = make_otel()
    yield otel
    otel.tracer_provider.shutdown()
    otel.meter_provider.shutdown()


@pytest.fixture
def traced(amqp_url: str, rig: Otel) -> Iterator[Connection]:
    """A connection whose telemetry records into ``rig``."""
    conn = Connection(amqp_url, connection_name="traced")
    assert conn.telemetry.enabled  # opentelemetry-api is importable: on by default
    conn.telemetry = rig.telemetry
    with conn:
        yield conn


@pytest.fixture
def names(traced: Connection, unique_name: str) -> Iterator[str]:
    yield unique_name
    ch = traced.channel()
    for suffix in ("", ".dead", "-rpc", "-rpc.dead", "-out", ".retry.50", ".retry.100"):
        ch.delete_queue(unique_name + suffix)
    ch.close()


def _spans(rig: Otel, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in rig.spans() if s.kind is kind]


def _child_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.parent is not None and parent.context is not None
    return bool(child.parent.span_id == parent.context.span_id)


def test_one_trace_from_publish_through_a_worker_and_an_rpc_call_to_the_server(
    traced: Connection, rig: Otel, names: str
) -> None:
    work, rpc = names, f"{names}-rpc"
    server = RpcServer(traced, queue=rpc)

    @server.procedure
    def add(x: int, y: int) -> int:
        return x + y

    results: list[object] = []
    with RpcClient(traced, queue=rpc) as client:

        def handle(body: Any) -> None:
            results.append(client.call("add", body["x"], body["y"]))

        server.start()
        try:
            with WorkerPool(traced, queue=Queue(work), handler=handle, concurrency=1) as pool:
                tracer = rig.tracer_provider.get_tracer("test")
                with tracer.start_as_current_span("http request") as root:
                    Publisher(traced, routing_key=work).publish({"x": 2, "y": 3})
                wait_for(
                    lambda: bool(_spans(rig, SpanKind.CONSUMER)),
                    20,
                    "the process span",
                    clock=traced.clock,
                )
            assert pool.stats.processed == 1
        finally:
            server.close()
    assert results == [5]

    (producer,) = _spans(rig, SpanKind.PRODUCER)
    (consumer,) = _spans(rig, SpanKind.CONSUMER)
    (client_span,) = _spans(rig, SpanKind.CLIENT)
    (server_span,) = _spans(rig, SpanKind.SERVER)
    trace_id = root.get_span_context().trace_id
    for span in (producer, consumer, client_span, server_span):
        assert span.context is not None and span.context.trace_id == trace_id, span.name
    assert producer.name == "publish amq.default"
    assert consumer.name == f"process {work}"
    assert client_span.name == server_span.name == f"{rpc}/add"
    assert (
        producer.parent is not None and producer.parent.span_id == root.get_span_context().span_id
    )
    assert _child_of(consumer, producer)
    assert _child_of(client_span, consumer)
    assert _child_of(server_span, client_span)
    assert consumer.attributes is not None and consumer.attributes["hutch.settlement"] == "acked"


@pytest.mark.rabbitmq_only("interop with plain pika programs")
def test_trace_context_to_and_from_plain_pika_programs(
    amqp_url: str, traced: Connection, rig: Otel, names: str
) -> None:
    work, out = names, f"{names}-out"
    params = pika.URLParameters(amqp_url)
    plain = pika.BlockingConnection(params)
    try:
        ch = plain.channel()
        ch.queue_declare(out)
        # hutch -> plain pika: the message carries the producer span's traceparent
        Publisher(traced, routing_key=out).publish(b"to pika", headers={"app": "shop"})
        method: Any = None
        props: Any = None
        for _ in range(200):
            method, props, _body = ch.basic_get(out, auto_ack=True)
            if method is not None:
                break
            plain.sleep(0.01)
        assert props is not None and props.headers is not None
        assert props.headers["app"] == "shop"
        (producer,) = _spans(rig, SpanKind.PRODUCER)
        assert producer.context is not None
        traceparent = props.headers["traceparent"]
        assert f"{producer.context.trace_id:032x}" in traceparent
        assert f"{producer.context.span_id:016x}" in traceparent

        # plain pika -> hutch: a foreign service's traceparent is the handler span's parent
        foreign = TracerProvider().get_tracer("plain-pika-service")
        with foreign.start_as_current_span("checkout", kind=SpanKind.PRODUCER) as upstream:
            headers: dict[str, Any] = {}
            propagate.inject(headers)  # what opentelemetry-instrumentation-pika does
        ch.queue_declare(work, durable=True)
        ch.basic_publish("", work, b"{}", pika.BasicProperties(headers=headers))
    finally:
        plain.close()
    done = threading.Event()
    with WorkerPool(traced, queue=Queue(work), handler=lambda body: done.set(), concurrency=1):
        assert done.wait(20)
        wait_for(lambda: bool(_spans(rig, SpanKind.CONSUMER)), 20, "the process span")
    (consumer,) = _spans(rig, SpanKind.CONSUMER)
    context = upstream.get_span_context()
    assert consumer.context is not None and consumer.context.trace_id == context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == context.span_id


def test_counters_equal_what_was_published_handled_retried_and_dead_lettered(
    traced: Connection, rig: Otel, names: str
) -> None:
    work = names
    queue = Queue(work, durable=True)
    with Publisher(traced, routing_key=work, declare=[queue], mandatory=True) as pub:
        for i in range(4):
            pub.publish({"n": i})
        pub.publish_many([{"n": 10}, {"poison": True}]).raise_for_failures()
        with pytest.raises(Unroutable):
            pub.publish({"n": -1}, routing_key=f"{work}-nowhere")
    assert rig.total(SENT_METRIC) == 7
    assert rig.total(CONFIRMED_METRIC) == 6
    assert rig.total(RETURNED_METRIC) == 1

    def handle(body: Any, message: Message[Any]) -> None:
        if body.get("poison"):
            raise ValueError("poison pill")

    policy = RetryPolicy(max_attempts=3, backoff=0.05, multiplier=2.0)
    with WorkerPool(traced, queue=queue, handler=handle, retry=policy, concurrency=2) as pool:
        wait_for(lambda: pool.stats.dead_lettered == 1, 20, "the dead letter", clock=traced.clock)
        stats = pool.stats
    # 5 good messages once, the poison pill three times
    assert (stats.processed, stats.retried, stats.dead_lettered) == (5, 2, 1)
    assert rig.total(CONSUMED_METRIC) == 8
    assert rig.total(ACKED_METRIC) == 5
    assert rig.total(RETRIED_METRIC) == 2
    assert rig.total(DEAD_LETTERED_METRIC) == 1
    assert rig.total(DEAD_LETTERED_METRIC, error__type="ValueError") == 1

    poisoned = [
        s
        for s in _spans(rig, SpanKind.CONSUMER)
        if s.attributes is not None and s.attributes.get("hutch.settlement") != "acked"
    ]
    assert len(poisoned) == 3
    events = [e.name for s in poisoned for e in s.events]
    assert events.count("hutch.retry") == 2 and events.count("hutch.dead_letter") == 1
    assert events.count("exception") == 3  # the handler's exception, on every attempt
    dead = next(e for s in poisoned for e in s.events if e.name == "hutch.dead_letter")
    assert dead.attributes is not None and "poison pill" in str(dead.attributes["hutch.reason"])


def test_subscriber_run_and_iteration_continue_the_publishers_trace(
    traced: Connection, rig: Otel, names: str
) -> None:
    work = names
    with Publisher(traced, routing_key=work, declare=[Queue(work)]) as pub:
        for body in ({"n": 1}, {"boom": True}, {"n": 2}, {"n": 3}):
            pub.publish(body)

    def handle(body: Any) -> None:
        if body.get("boom"):
            raise RuntimeError("boom")

    with Subscriber(traced, queue=work, dead_letter_queue=f"{work}.dead") as sub:
        # the limit counts successes: n=1, boom, n=2
        assert sub.run(handle, limit=2, handle_signals=False) == 2
        for _message in sub.messages(limit=1):
            with rig.tracer_provider.get_tracer("test").start_as_current_span("inside"):
                pass
    producers = _spans(rig, SpanKind.PRODUCER)
    consumers = _spans(rig, SpanKind.CONSUMER)
    assert len(producers) == 4 and len(consumers) == 4
    for producer, consumer in zip(producers, consumers, strict=True):
        assert _child_of(consumer, producer)
    failed = consumers[1]
    assert [e.name for e in failed.events] == ["exception", "hutch.dead_letter"]
    inside = next(s for s in rig.spans() if s.name == "inside")
    assert _child_of(inside, consumers[3])  # the loop body runs inside the process span
    assert rig.total(ACKED_METRIC) == 3 and rig.total(DEAD_LETTERED_METRIC) == 1


def test_tracing_off_adds_no_headers_and_no_spans(amqp_url: str, rig: Otel, names: str) -> None:
    work = names
    with Connection(amqp_url, tracing=False) as conn:
        assert conn.telemetry is NOOP_TELEMETRY
        with Publisher(conn, routing_key=work, declare=[Queue(work)]) as pub:
            pub.publish(b"plain")
            pub.publish(b"with headers", headers={"app": "shop"})
            pub.publish_many([b"a", b"b"])
        ch = conn.channel()
        got = []
        while (d := ch.get(work)) is not None:
            got.append(d.headers)
            d.ack()
        ch.close()
        seen = threading.Event()
        with WorkerPool(conn, queue=Queue(work), handler=lambda b: seen.set(), concurrency=1):
            with Publisher(conn, routing_key=work) as pub:
                pub.publish(b"handled")
            assert seen.wait(20)
    assert got == [{}, {"app": "shop"}, {}, {}]
    assert rig.spans() == []


def publish_from_a_worker_process(body: Any) -> None:
    """A ``processes=True`` handler: publishes on a connection it makes in the child.

    The child configures no tracer provider: with the API alone a span started under an
    attached remote context carries that context, so the injected ``traceparent`` shows
    whether the child continued the trace.
    """
    with Connection(body["url"]) as conn, Publisher(conn, routing_key=body["out"]) as pub:
        pub.publish(b"from the child")


@pytest.mark.rabbitmq_only("worker processes")
def test_a_handler_in_a_worker_process_continues_the_trace(
    amqp_url: str, traced: Connection, rig: Otel, names: str
) -> None:
    work, out = names, f"{names}-out"
    with Publisher(traced, routing_key=out, declare=[Queue(out)]):
        pass  # declares the queue the child publishes to
    pool = WorkerPool(
        traced,
        queue=Queue(work),
        handler=publish_from_a_worker_process,
        concurrency=1,
        processes=True,
        retry=None,
    )
    with pool:
        Publisher(traced, routing_key=work).publish({"url": amqp_url, "out": out})
        wait_for(lambda: pool.stats.processed == 1, 30, "the task")
    assert pool.stats.failed == 0
    (producer,) = _spans(rig, SpanKind.PRODUCER)
    (consumer,) = _spans(rig, SpanKind.CONSUMER)
    assert producer.context is not None and consumer.context is not None
    assert _child_of(consumer, producer)

    # read what the child published with plain pika: its traceparent is the process span's
    plain = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = plain.channel()
        method, props, body = ch.basic_get(out, auto_ack=True)
    finally:
        plain.close()
    assert method is not None and props is not None and body == b"from the child"
    headers = props.headers or {}
    assert "traceparent" in headers, headers
    _version, trace_id, parent_id, _flags = str(headers["traceparent"]).split("-")
    assert trace_id == f"{producer.context.trace_id:032x}"
    assert parent_id == f"{consumer.context.span_id:016x}"
