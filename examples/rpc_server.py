"""RPC server: the seed's ``add_point`` service, served with hutch.

Serves the :class:`calculator.Calculator` interface on a queue (``rpc_queue`` by default),
with four worker threads, until SIGTERM or Ctrl-C (or ``--serve-for`` seconds), finishing the
calls in hand before it exits. It also serves ``fib`` as a *raw* procedure, the default for
requests that name no procedure, so the classic pika tutorial client (text body ``"30"``, its
own reply queue) gets an answer too.

    python examples/rpc_server.py [amqp://guest:guest@localhost:5672/] [--queue rpc_queue]
                                  [--serve-for SECONDS]

The URL may also come from ``$HUTCH_URL``. Then run ``examples/rpc_client.py``, or
``hutch call add_point 1 2``.
"""

from __future__ import annotations

import argparse
import signal
import threading

import hutch
from calculator import Calculator, Point

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"


class Shape:
    """The implementation: a shape the clients add points to (shared by the workers)."""

    def __init__(self) -> None:
        self._points: list[Point] = []
        self._lock = threading.Lock()

    def add_point(self, x: int, y: int) -> Point:
        with self._lock:
            point = Point(x=x, y=y, n=len(self._points) + 1)
            self._points.append(point)
        return point

    def centroid(self) -> Point | None:
        with self._lock:
            points = list(self._points)
        if not points:
            return None
        return Point(
            x=round(sum(p.x for p in points) / len(points)),
            y=round(sum(p.y for p in points) / len(points)),
        )

    def divide(self, a: float, b: float) -> float:
        return a / b


def fib(n: int) -> int:
    """The n-th Fibonacci number (the RabbitMQ tutorial's procedure)."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the calculator over RabbitMQ.")
    parser.add_argument(
        "url", nargs="?", help="broker URL (default: $HUTCH_URL, else " + DEFAULT_URL + ")"
    )
    parser.add_argument("--queue", default="rpc_queue")
    parser.add_argument("--serve-for", type=float, help="stop after this many seconds")
    args = parser.parse_args()

    server = hutch.RpcServer(args.url, queue=args.queue, concurrency=4, default="fib")
    impl: Calculator = Shape()  # mypy checks Shape against the interface here
    server.implement(Calculator, impl)
    server.register(fib, raw=True)

    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    if args.serve_for is not None:
        timer = threading.Timer(args.serve_for, server.stop)
        timer.daemon = True
        timer.start()
    server.start()
    print(f"ready: serving {', '.join(server.procedures)} on queue {args.queue!r}", flush=True)
    server.run()  # returns after stop(), once the calls in hand are answered
    print(f"stopped: {server.handled} calls answered, {server.failed} with an error", flush=True)


if __name__ == "__main__":
    main()
