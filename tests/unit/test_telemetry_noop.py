"""No cost when unused: nothing imported, nothing allocated; the global providers when used."""

from __future__ import annotations

from textwrap import dedent

import pytest

from hutch._telemetry import NOOP_TELEMETRY, PublishOutcome, Scope, Settlement, create_telemetry
from tests.otel_support import run_python

# every call a pattern makes, on whatever telemetry `tel` is
_EVERY_CALL = """
from hutch._telemetry import PublishOutcome, Settlement
headers = {"a": 1}
with tel.publish_span(exchange="e", routing_key="k", message_id="m", body_size=1) as s:
    assert s.inject(headers) is headers and s.inject(None) is None
with tel.process_span(queue="q", exchange="e", routing_key="k", headers=headers,
                      redelivered=True) as s:
    s.fail(ValueError("x"))
    s.settle(Settlement.RETRIED, reason="x", attempt=2, delay=1.0)
    s.event("e", {"a": 1})
with tel.rpc_client_span(procedure="p", service="s") as s:
    s.inject(None)
with tel.rpc_server_span(procedure="p", service="s", headers=None):
    pass
tel.record_publish_outcome("e", PublishOutcome.NACKED, 2)
tel.record_settlement("q", Settlement.ACKED, 3)
tel.on_connection_event("lost", None)
"""


def test_without_opentelemetry_nothing_is_imported() -> None:
    out = run_python(
        dedent("""
        import sys
        import hutch, hutch._telemetry, hutch._telemetry.http
        from hutch._telemetry import NOOP_TELEMETRY, create_telemetry
        tel = create_telemetry()
        assert tel is NOOP_TELEMETRY and not tel.enabled
        """)
        + _EVERY_CALL
        + dedent("""
        print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
        """),
        block=("opentelemetry",),
    )
    assert out.strip() == "[]"


def test_tracing_off_imports_nothing_even_when_installed() -> None:
    out = run_python(
        dedent("""
        import sys
        import hutch
        from hutch._telemetry import NOOP_TELEMETRY, create_telemetry
        tel = create_telemetry(enabled=False)
        assert tel is NOOP_TELEMETRY
        """)
        + _EVERY_CALL
        + dedent("""
        print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
        import opentelemetry.trace  # it is installed: nothing but tracing=False kept it out
        assert create_telemetry().enabled
        """)
    )
    assert out.strip() == "[]"


def test_the_global_providers_are_used_even_when_set_later() -> None:
    out = run_python(
        """
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from hutch._telemetry import create_telemetry

        tel = create_telemetry(connection_name="c")   # before the application sets up OTel
        exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tp)
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        with tel.publish_span(exchange="e", routing_key="k") as s:
            headers = s.inject(None)
        (span,) = exporter.get_finished_spans()
        assert headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
        names = [m.name for rm in reader.get_metrics_data().resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics]
        print(span.name, span.instrumentation_scope.name, names)
        """
    )
    assert out.startswith("publish e hutch [")
    assert "'messaging.client.sent.messages'" in out


def test_api_alone_records_nothing_and_costs_no_headers() -> None:
    # opentelemetry-api without an SDK: the default no-op providers; no traceparent is made up
    tel = create_telemetry(enabled=True)
    assert tel.enabled
    with tel.publish_span(exchange="e", routing_key="k") as scope:
        assert scope.inject(None) is None
        assert scope.inject({"a": 1}) == {"a": 1}


def test_the_noop_scope_is_shared_and_lets_exceptions_through() -> None:
    tel = NOOP_TELEMETRY
    first = tel.publish_span(exchange="", routing_key="")
    assert first is tel.process_span(queue="q", exchange="", routing_key="", headers=None)
    assert first is tel.rpc_client_span(procedure="p", service="s")
    assert type(first) is Scope
    with pytest.raises(KeyError):
        with tel.rpc_server_span(procedure="p", service="s", headers=None):
            raise KeyError("k")
    tel.record_publish_outcome("e", PublishOutcome.CONFIRMED)
    first.settle(Settlement.DEAD_LETTERED, reason="r")


def test_api_alone_skips_span_work_but_passes_a_trace_on() -> None:
    # no SDK: no span object per message (NOOP_SCOPE), unless there is a trace to pass on
    out = run_python(
        """
        from opentelemetry import context
        from hutch._telemetry import NOOP_SCOPE, create_telemetry
        tel = create_telemetry(connection_name="c")
        assert tel.rpc_client_span(procedure="p", service="s") is NOOP_SCOPE
        assert tel.rpc_server_span(procedure="p", service="s", headers={"a": 1}) is NOOP_SCOPE
        assert tel.publish_span(exchange="e", routing_key="k") is NOOP_SCOPE
        assert tel.process_span(queue="q", exchange="", routing_key="", headers=None) is NOOP_SCOPE
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        with tel.process_span(queue="q", exchange="", routing_key="",
                              headers={"traceparent": parent}) as incoming:
            assert incoming is not NOOP_SCOPE
            with tel.publish_span(exchange="e", routing_key="k") as out:
                print(out.inject(None)["traceparent"] == parent)
        """
    )
    assert out.strip() == "True"
