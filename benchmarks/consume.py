"""Consuming throughput: hutch Subscriber against raw pika at prefetch 100, same broker.

A durable queue is filled with 20k persistent 100-byte messages; each consumer drains it,
acking every message after its handler returns. Prints msgs/s and the ratio.

    python benchmarks/consume.py [--url amqp://...] [--messages 20000]
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hutch
from _common import broker_url, interleaved, parser, print_rows, row

PREFETCH = 100


def _fill(url: str, queue: str, n: int) -> None:
    with hutch.connect(url) as conn, hutch.Publisher(conn, routing_key=queue, model=bytes) as pub:
        for _ in range(0, n, 1000):
            pub.publish_many([b"x" * 100] * 1000).raise_for_failures()


def pika_consume(url: str, queue: str, n: int) -> float:
    _fill(url, queue, n)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=PREFETCH)
    count = 0
    start = 0.0

    def on_message(c: Any, method: Any, props: Any, body: bytes) -> None:
        nonlocal count, start
        if count == 0:
            start = time.perf_counter()
        count += 1
        c.basic_ack(method.delivery_tag)
        if count == n:
            c.stop_consuming()

    ch.basic_consume(queue, on_message)
    ch.start_consuming()
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def hutch_consume(url: str, queue: str, n: int) -> float:
    _fill(url, queue, n)
    with hutch.connect(url) as conn:
        sub = hutch.Subscriber(conn, queue=queue, model=bytes, prefetch=PREFETCH)
        count = 0
        start = 0.0

        def handler(body: bytes) -> None:
            nonlocal count, start
            if count == 0:
                start = time.perf_counter()
            count += 1

        sub.run(handler, limit=n)
        elapsed = time.perf_counter() - start
        sub.close()
    return n / elapsed


def run(url: str, messages: int = 20_000, repeats: int = 3) -> dict[str, Any]:
    queue = f"bench.consume.{uuid.uuid4().hex[:8]}"
    with hutch.connect(url) as conn:
        conn.channel().declare([hutch.Queue(queue, durable=True)])
    try:
        r = interleaved(
            repeats,
            {
                "pika": lambda: pika_consume(url, queue, messages),
                "hutch": lambda: hutch_consume(url, queue, messages),
            },
        )
        pika_rate, hutch_rate = r["pika"], r["hutch"]
    finally:
        with hutch.connect(url) as conn:
            conn.channel().delete_queue(queue)
    rows = [
        row(
            f"consume + ack, prefetch {PREFETCH}",
            hutch_rate,
            pika_rate,
            "pika basic_consume",
            "msg/s",
            0.90,
        )
    ]
    return {"title": f"Consuming ({messages} x 100 B persistent)", "rows": rows}


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    with broker_url(args.url) as url:
        result = run(url, args.messages, args.repeats)
    print_rows(result["title"], result["rows"])


if __name__ == "__main__":
    main()
