"""What telemetry costs per message: the calls a pattern makes, against doing nothing.

No broker needed. For each call site (publish, handler, RPC, settle) it times, in ns per
message, the empty loop (the floor), the no-op telemetry (no opentelemetry installed, or
``tracing=False``), and when opentelemetry is importable: the API alone (no SDK: the
global no-op providers) and the SDK with a do-nothing span exporter and a metric reader
that is never collected (the cost of recording, not of exporting). Best of ``--repeats``.

    python benchmarks/telemetry_overhead.py [--calls 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hutch._telemetry import NOOP_TELEMETRY, Settlement, Telemetry, create_telemetry

HEADERS = {"x-app": "bench"}


def publish(tel: Telemetry) -> None:
    with tel.publish_span(exchange="orders", routing_key="o.new", body_size=100) as span:
        span.inject(HEADERS)


def handle(tel: Telemetry) -> None:
    with tel.process_span(queue="jobs", exchange="", routing_key="jobs", headers=HEADERS) as s:
        s.settle(Settlement.ACKED)


def rpc_call(tel: Telemetry) -> None:
    with tel.rpc_client_span(procedure="add", service="calc") as span:
        span.inject(None)


def settle(tel: Telemetry) -> None:
    tel.record_settlement("jobs", Settlement.ACKED)


def nothing(tel: Telemetry) -> None:
    pass


SITES: dict[str, Callable[[Telemetry], None]] = {
    "publish_span + inject": publish,
    "process_span + settle": handle,
    "rpc_client_span + inject": rpc_call,
    "record_settlement": settle,
}


def ns_per_call(fn: Callable[[Telemetry], None], tel: Telemetry, calls: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn(tel)
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def contenders() -> dict[str, Telemetry]:
    found: dict[str, Telemetry] = {"no-op": NOOP_TELEMETRY}
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            SimpleSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return found
    found["API, no SDK"] = create_telemetry()

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(Discard()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    found["SDK, no-op export"] = create_telemetry(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    return found


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--calls", type=int, default=200_000)
    cli.add_argument("--repeats", type=int, default=5)
    args = cli.parse_args()
    tels = contenders()
    floor = ns_per_call(nothing, NOOP_TELEMETRY, args.calls, args.repeats)
    print(f"empty loop (a function call doing nothing): {floor:.0f} ns per call")
    print(f"{'call site':28}" + "".join(f"{name:>20}" for name in tels))
    for site, fn in SITES.items():
        cells = []
        for tel in tels.values():
            calls = args.calls if not tel.enabled else max(args.calls // 20, 1000)
            cost = ns_per_call(fn, tel, calls, args.repeats) - floor
            cells.append(f"{cost:>17.0f} ns")
        print(f"{site:28}" + "".join(cells))
    print("(ns per call above the empty loop; best of", args.repeats, "runs)")


if __name__ == "__main__":
    main()
