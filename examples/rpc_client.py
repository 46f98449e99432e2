"""RPC client: remote calls that read like local ones, typed through the shared interface.

Start ``examples/rpc_server.py`` first, then::

    python examples/rpc_client.py [amqp://guest:guest@localhost:5672/] [--queue rpc_queue]

The seed wrote ``ret = client.call('add_point', ...); ret.get_result()`` and waited forever
if no reply came. With hutch a call is a method call on a typed stub, results come back as
the interface's types, and every way a call can fail is an exception: the procedure raised
(``RemoteError``), nobody serves the queue (``NoServer``, at once) or no reply came in time
(``RpcTimeout``).
"""

from __future__ import annotations

import argparse
import uuid

import hutch
from calculator import Calculator, Point

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"


def main() -> None:
    parser = argparse.ArgumentParser(description="Call the calculator over RabbitMQ.")
    parser.add_argument(
        "url", nargs="?", help="broker URL (default: $HUTCH_URL, else " + DEFAULT_URL + ")"
    )
    parser.add_argument("--queue", default="rpc_queue")
    args = parser.parse_args()

    with hutch.connect(args.url) as conn, hutch.RpcClient(conn, queue=args.queue) as client:
        calc = client.stub(Calculator)  # typed: mypy knows add_point returns a Point
        first = calc.add_point(1, 2)
        second = calc.add_point(3, 4)
        print(f"add_point(1, 2) -> {first!r}")
        print(f"add_point(3, 4) -> {second!r}")
        print(f"centroid() -> {calc.centroid()!r}")

        # several calls in flight at once; future.result() is the seed's get_result()
        # (the server's four workers run them side by side: which one is numbered first varies)
        futures = [client.call_async("add_point", x, x) for x in range(5, 8)]
        points = [Point.model_validate(f.result()) for f in futures]
        print(
            f"3 calls in flight -> {[(p.x, p.y) for p in points]}, "
            f"numbered {sorted(p.n for p in points)}"
        )

        # untyped, by attribute: the result is plain JSON data
        print(f"proxy.divide(1, 4) -> {client.proxy.divide(1, 4)!r}")

        try:
            calc.divide(1, 0)
        except hutch.RemoteError as exc:
            print(f"divide(1, 0) -> RemoteError {exc.type_name}: {exc.remote_message}")

        # a raw call, as a program that doesn't use hutch would make it
        print(f"call_raw('30') -> {client.call_raw('30')!r}")

        nobody = f"{args.queue}.nobody-{uuid.uuid4().hex[:6]}"
        try:
            hutch.RpcClient(conn, queue=nobody).call("add_point", 1, 2)
        except hutch.NoServer:
            print("a queue nobody serves -> NoServer, at once")


if __name__ == "__main__":
    main()
