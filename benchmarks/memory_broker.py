"""The in-process memory broker against RabbitMQ: hutch on both, raw pika on RabbitMQ.

What a test suite gains from ``--hutch-broker=memory``, per operation, in one run: each
figure is a median of interleaved rounds (hutch on ``memory://``, hutch on RabbitMQ, raw
pika on the same RabbitMQ).

* publish, confirm each: ``Publisher.publish`` against pika ``confirm_delivery()``;
* consume: ``Subscriber.messages()`` over a backlog (each acked) against pika
  ``basic_consume`` with manual acks;
* RPC call: a blocking ``RpcClient.call`` to an ``RpcServer`` against a pika client and
  server on direct reply-to.

    python benchmarks/memory_broker.py [--url amqp://...] [--messages 5000] [--clock virtual]

``--clock virtual`` runs the memory broker on virtual time, as the ``hutch.testing``
fixtures do (the default, ``real``, is ``memory://NAME``'s).
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hutch
from _common import broker_url, interleaved, parser, print_rows, rate, row

BODY = b"x" * 100
RPC_SHARE = 10  # RPC calls are this many times fewer than messages


def _memory_url(clock: str) -> str:
    # a broker of its own per round; one process has one virtual clock for all of them
    return f"memory://bench-{uuid.uuid4().hex[:8]}?clock={clock}"


@contextmanager
def _queue(url: str) -> Iterator[tuple[hutch.Connection, str]]:
    """A connection to ``url`` and a fresh queue on it, deleted afterwards."""
    queue = hutch.Queue(f"bench.memory.{uuid.uuid4().hex[:8]}", durable=False, auto_delete=False)
    with hutch.connect(url) as conn:
        conn.channel().declare([queue])
        try:
            yield conn, queue.name
        finally:
            conn.channel().delete_queue(queue.name)


def hutch_publish(url: str, n: int) -> float:
    with _queue(url) as (conn, name), hutch.Publisher(conn, routing_key=name) as pub:

        def go() -> None:
            for _ in range(n):
                pub.publish(BODY)

        return rate(n, go)


def pika_publish(url: str, n: int) -> float:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()

    def go() -> None:
        for _ in range(n):
            ch.basic_publish("", queue, BODY)

    try:
        return rate(n, go)
    finally:
        conn.close()


def hutch_consume(url: str, n: int) -> float:
    with _queue(url) as (conn, name):
        with hutch.Publisher(conn, routing_key=name) as pub:
            pub.publish_many([BODY] * n).raise_for_failures()
        with hutch.Subscriber(conn, queue=name) as sub:

            def go() -> None:
                got = sum(1 for _ in sub.messages(timeout=10, limit=n))
                assert got == n, got

            return rate(n, go)


def pika_consume(url: str, n: int) -> float:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    for _ in range(n):
        ch.basic_publish("", queue, BODY)
    seen = [0]

    def on_message(c: Any, method: Any, _props: Any, _body: bytes) -> None:
        c.basic_ack(method.delivery_tag)
        seen[0] += 1
        if seen[0] == n:
            c.stop_consuming()

    def go() -> None:
        ch.basic_qos(prefetch_count=100)
        ch.basic_consume(queue, on_message)
        ch.start_consuming()

    try:
        return rate(n, go)
    finally:
        conn.close()


def hutch_rpc(url: str, n: int) -> float:
    name = f"bench.memory.rpc.{uuid.uuid4().hex[:8]}"
    with hutch.connect(url) as conn:
        server = hutch.RpcServer(conn, queue=hutch.Queue(name, durable=False))

        @server.procedure
        def echo(x: int) -> int:
            return x

        with server.start(), hutch.RpcClient(conn, queue=name) as client:

            def go() -> None:
                for i in range(n):
                    client.call("echo", i)

            return rate(n, go)


def pika_rpc(url: str, n: int) -> float:
    name = f"bench.memory.rpc.{uuid.uuid4().hex[:8]}"
    ready, stop = threading.Event(), threading.Event()

    def serve() -> None:
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        ch.queue_declare(name, auto_delete=True)

        def on_request(c: Any, method: Any, props: Any, body: bytes) -> None:
            reply = pika.BasicProperties(correlation_id=props.correlation_id)
            c.basic_publish("", props.reply_to, body, reply)
            c.basic_ack(method.delivery_tag)

        ch.basic_consume(name, on_request)
        ready.set()
        while not stop.is_set():
            conn.process_data_events(0.05)
        conn.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    ready.wait(30)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    replies: list[bytes] = []
    ch.basic_consume(
        "amq.rabbitmq.reply-to", lambda _c, _m, _p, body: replies.append(body), auto_ack=True
    )

    def go() -> None:
        for i in range(n):
            props = pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=str(i))
            ch.basic_publish("", name, str(i).encode(), props)
            while len(replies) <= i:
                conn.process_data_events(None)

    try:
        return rate(n, go)
    finally:
        conn.close()
        stop.set()
        server.join(10)


def run(url: str, messages: int = 5000, repeats: int = 3, clock: str = "real") -> dict[str, Any]:
    """Each operation on the memory broker (on ``clock`` time) and on RabbitMQ; table rows."""
    calls = max(messages // RPC_SHARE, 10)
    r = interleaved(
        repeats,
        {
            "memory_publish": lambda: hutch_publish(_memory_url(clock), messages),
            "rabbit_publish": lambda: hutch_publish(url, messages),
            "pika_publish": lambda: pika_publish(url, messages),
            "memory_consume": lambda: hutch_consume(_memory_url(clock), messages),
            "rabbit_consume": lambda: hutch_consume(url, messages),
            "pika_consume": lambda: pika_consume(url, messages),
            "memory_rpc": lambda: hutch_rpc(_memory_url(clock), calls),
            "rabbit_rpc": lambda: hutch_rpc(url, calls),
            "pika_rpc": lambda: pika_rpc(url, calls),
        },
    )
    rows = []
    for what, label, unit in [
        ("publish", "publish, confirm each", "msg/s"),
        ("consume", "consume a backlog, ack each", "msg/s"),
        ("rpc", "RPC call, one at a time", "call/s"),
    ]:
        memory = r[f"memory_{what}"]
        rows.append(
            row(f"{label}: memory", memory, r[f"rabbit_{what}"], "hutch on RabbitMQ", unit, None)
        )
        rows.append(
            row(f"{label}: memory", memory, r[f"pika_{what}"], "raw pika on RabbitMQ", unit, None)
        )
    return {
        "title": (
            f"The memory broker on {clock} time against RabbitMQ ({messages} messages, "
            f"{calls} calls)"
        ),
        "rows": rows,
    }


def main() -> None:
    p = parser(__doc__ or "")
    p.set_defaults(messages=5000)
    p.add_argument(
        "--clock", choices=["real", "virtual"], default="real", help="the memory broker's time"
    )
    args = p.parse_args()
    with broker_url(args.url) as url:
        result = run(url, args.messages, args.repeats, args.clock)
    print_rows(result["title"], result["rows"])


if __name__ == "__main__":
    main()
