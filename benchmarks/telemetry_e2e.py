"""What recording traces and metrics costs end to end: hutch with the OpenTelemetry SDK on and off.

Needs ``opentelemetry-sdk`` and a broker. In one process, the SDK is set up as an
application would (a tracer provider with a span processor whose exporter does nothing, a
meter provider with a reader that is never collected), then the same workloads run with
``tracing=True`` (recording) and ``tracing=False`` (hutch's no-op telemetry), taking turns:
publishing without confirms, consuming with acks (prefetch 100), and sequential RPC calls
to a server in the same process (so both its spans and the client's are recorded). Prints
the median of the rounds and the ratio.

    python benchmarks/telemetry_e2e.py --url amqp://guest:guest@localhost:5672/ [--rounds 3]
    python benchmarks/telemetry_e2e.py --url ... --ratio 0.01     # 1 % of traces sampled
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable, Sequence

import hutch

MESSAGES = 10_000
CALLS = 2_000


def setup_sdk(ratio: float | None) -> None:
    """The SDK with a do-nothing exporter and a metric reader that is never collected.

    ``ratio``: sample that share of the traces (``ParentBased(TraceIdRatioBased)``), else all.
    """
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Nothing(SpanExporter):
        def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
            return SpanExportResult.SUCCESS

    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    sampler = None if ratio is None else ParentBased(TraceIdRatioBased(ratio))
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(Nothing()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def publish_rate(url: str, tracing: bool) -> float:
    queue = f"bench.tel-e2e.{uuid.uuid4().hex[:8]}"
    with hutch.connect(url, tracing=tracing) as conn:
        conn.channel().declare([hutch.Queue(queue, durable=False, auto_delete=False)])
        with hutch.Publisher(conn, routing_key=queue, model=bytes, confirm=False) as pub:
            start = time.perf_counter()
            for _ in range(MESSAGES):
                pub.publish(b"x" * 100)
            pub.flush()
            elapsed = time.perf_counter() - start
        conn.channel().delete_queue(queue)
    return MESSAGES / elapsed


def consume_rate(url: str, tracing: bool) -> float:
    queue = f"bench.tel-e2e.{uuid.uuid4().hex[:8]}"
    with hutch.connect(url, tracing=False) as filler:
        filler.channel().declare([hutch.Queue(queue, durable=False, auto_delete=False)])
        with hutch.Publisher(filler, routing_key=queue, model=bytes) as pub:
            for _ in range(0, MESSAGES, 1000):
                pub.publish_many([b"x" * 100] * 1000).raise_for_failures()
    with hutch.connect(url, tracing=tracing) as conn:
        sub = hutch.Subscriber(conn, queue=queue, model=bytes, prefetch=100)
        start = time.perf_counter()
        sub.run(lambda body: None, limit=MESSAGES)
        elapsed = time.perf_counter() - start
        sub.close()
        conn.channel().delete_queue(queue)
    return MESSAGES / elapsed


def rpc_p50_ms(url: str, tracing: bool) -> float:
    queue = f"bench.tel-e2e.{uuid.uuid4().hex[:8]}"
    with hutch.connect(url, tracing=tracing) as conn:
        server = hutch.RpcServer(conn, queue=hutch.Queue(queue, durable=False, auto_delete=True))

        @server.procedure
        def add(x: int, y: int) -> int:
            return x + y

        with server, hutch.RpcClient(conn, queue=queue) as client:
            server.start()
            for i in range(200):
                client.call("add", i, 1)
            times = []
            for i in range(CALLS):
                t = time.perf_counter()
                client.call("add", i, 1)
                times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", default=os.environ.get("HUTCH_URL"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=None, help="trace sampling ratio (all)")
    args = parser.parse_args()
    if not args.url:
        parser.error("--url or HUTCH_URL is required")
    setup_sdk(args.ratio)
    print("SDK: every trace sampled" if args.ratio is None else f"SDK: {args.ratio:.0%} sampled")
    workloads: list[tuple[str, str, Callable[[str, bool], float], bool]] = [
        ("publish, no confirms", "msg/s", publish_rate, False),
        ("consume + ack, prefetch 100", "msg/s", consume_rate, False),
        ("RPC call, sequential, p50", "ms", rpc_p50_ms, True),
    ]
    print(f"{'workload':30} {'SDK off':>10} {'SDK on':>10}  on/off")
    for name, unit, fn, lower_is_better in workloads:
        got: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for tracing in (False, True):
                got[tracing].append(fn(args.url, tracing))
        off, on = statistics.median(got[False]), statistics.median(got[True])
        fmt = ".3f" if unit == "ms" else ",.0f"
        print(
            f"{name:30} {off:>10{fmt}} {on:>10{fmt}}  {on / off:.2f} ({unit}; "
            f"{'lower' if lower_is_better else 'higher'} is better)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
