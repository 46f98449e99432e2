"""Publishing throughput: hutch Publisher against raw pika, same broker, same run.

20k persistent 100-byte messages to a durable queue. Prints msgs/s and the ratio:
* without confirms: hutch ``confirm=False`` vs pika ``basic_publish``;
* confirmed batches: hutch ``publish_many`` in batches of 1000, and the confirm-batch
  context ``Publisher.batch()`` streaming the whole run as one batch, vs pika without
  confirms, vs pika with pipelined confirms, and vs pika with pipelined confirms waiting
  for each batch of 1000;
* confirm each: hutch ``publish`` (confirmed) vs pika ``confirm_delivery()`` + ``basic_publish``.

    python benchmarks/publish.py [--url amqp://...] [--messages 20000]
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hutch
from _common import broker_url, interleaved, parser, print_rows, rate, row

BODY = b"x" * 100
BATCH = 1000


def _queue(url: str) -> str:
    name = f"bench.publish.{uuid.uuid4().hex[:8]}"
    with hutch.connect(url) as conn:
        conn.channel().declare([hutch.Queue(name, durable=True)])
    return name


def _purge(url: str, name: str) -> None:
    with hutch.connect(url) as conn:
        conn.channel().purge(name)


def pika_publish(url: str, queue: str, n: int, confirm: bool) -> float:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    if confirm:
        ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/octet-stream")

    def go() -> None:
        for _ in range(n):
            ch.basic_publish("", queue, BODY, props)
        conn.process_data_events(0)

    try:
        return rate(n, go)
    finally:
        conn.close()
        _purge(url, queue)


def pika_pipelined_confirms(url: str, queue: str, n: int, batch: int | None = None) -> float:
    """Best-case raw pika: confirms pipelined on the channel's async object (private API).

    With ``batch``, it waits until each batch of that many is confirmed before sending the
    next one: what any client whose call returns per confirmed batch has to do.
    """
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    impl = ch._impl
    acked = [0]

    def on_ack(frame: Any) -> None:
        acked[0] = frame.method.delivery_tag

    impl.confirm_delivery(ack_nack_callback=on_ack, callback=lambda _f: None)
    conn.process_data_events(0.1)
    props = pika.BasicProperties(delivery_mode=2, content_type="application/octet-stream")

    def go() -> None:
        step = batch or n
        for start in range(0, n, step):
            for i in range(start, min(n, start + step)):
                impl.basic_publish("", queue, BODY, props)
                if i % 200 == 0:
                    conn.process_data_events(0)
            while acked[0] < min(n, start + step):
                conn.process_data_events(0.01)

    try:
        return rate(n, go)
    finally:
        conn.close()
        _purge(url, queue)


def hutch_publish(url: str, queue: str, n: int, mode: str) -> float:
    with hutch.connect(url) as conn:
        pub = hutch.Publisher(
            conn, routing_key=queue, model=bytes, confirm=mode != "noconfirm"
        ).open()

        def go() -> None:
            if mode == "batch":
                for _ in range(0, n, BATCH):
                    pub.publish_many([BODY] * BATCH).raise_for_failures()
            elif mode == "stream":
                with pub.batch() as batch:
                    for _ in range(n):
                        batch.publish(BODY)
                assert batch.result is not None
                batch.result.raise_for_failures()
            else:
                for _ in range(n):
                    pub.publish(BODY)
                pub.flush()

        try:
            return rate(n, go)
        finally:
            pub.close()
            _purge(url, queue)


def run(url: str, messages: int = 20_000, repeats: int = 5) -> dict[str, Any]:
    queue = _queue(url)
    each = max(500, messages // 20)
    try:
        r = interleaved(
            repeats,
            {
                "pika_plain": lambda: pika_publish(url, queue, messages, confirm=False),
                "hutch_plain": lambda: hutch_publish(url, queue, messages, "noconfirm"),
                "hutch_batch": lambda: hutch_publish(url, queue, messages, "batch"),
                "hutch_stream": lambda: hutch_publish(url, queue, messages, "stream"),
                "pika_pipelined": lambda: pika_pipelined_confirms(url, queue, messages),
                "pika_batched": lambda: pika_pipelined_confirms(url, queue, messages, BATCH),
            },
        )
        # one confirm at a time: latency-bound and so the noisiest figure on a shared
        # machine; twice the rounds of half the size keep its median steady
        r.update(
            interleaved(
                repeats * 2,
                {
                    "pika_each": lambda: pika_publish(url, queue, each, confirm=True),
                    "hutch_each": lambda: hutch_publish(url, queue, each, "each"),
                },
            )
        )
        pika_plain, hutch_plain, hutch_batch = r["pika_plain"], r["hutch_plain"], r["hutch_batch"]
        hutch_stream = r["hutch_stream"]
        pika_pipelined, pika_batched = r["pika_pipelined"], r["pika_batched"]
        pika_each, hutch_each = r["pika_each"], r["hutch_each"]
    finally:
        with hutch.connect(url) as conn:
            conn.channel().delete_queue(queue)
    rows = [
        row("publish, no confirms", hutch_plain, pika_plain, "pika basic_publish", "msg/s", 0.90),
        row(
            f"publish_many, confirmed batches of {BATCH}",
            hutch_batch,
            pika_plain,
            "pika no confirms",
            "msg/s",
            0.70,
        ),
        row(
            f"batch() context, one batch of {messages}",
            hutch_stream,
            pika_plain,
            "pika no confirms",
            "msg/s",
            0.70,
        ),
        row(
            f"batch() context, one batch of {messages}",
            hutch_stream,
            pika_pipelined,
            "pika pipelined confirms, no batches",
            "msg/s",
            None,
        ),
        row(
            f"publish_many, confirmed batches of {BATCH}",
            hutch_batch,
            pika_batched,
            f"pika pipelined confirms, waiting per {BATCH}",
            "msg/s",
            None,
        ),
        row("publish, confirm each", hutch_each, pika_each, "pika confirm_delivery", "msg/s", 0.95),
    ]
    return {"title": f"Publishing ({messages} x 100 B persistent)", "rows": rows}


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    with broker_url(args.url) as url:
        result = run(url, args.messages, args.repeats)
    print_rows(result["title"], result["rows"])


if __name__ == "__main__":
    main()
