"""A blocking ``run()`` in a process of its own, for the signal tests.

    python tests/integration/signal_script.py KIND URL QUEUE SECONDS

KIND is ``subscriber``, ``pool`` or ``rpc``. The handler appends ``start <pid> <time>``
and ``done <pid> <time>`` lines to ``$HUTCH_TEST_LOG`` around a sleep of SECONDS. The
script calls ``run()`` on the main thread with hutch's own signal handling and nothing
of its own: whatever ``run()`` raises (``KeyboardInterrupt`` on a second signal) ends
the process the way Python ends it; after a normal return it prints ``returned`` and
exits 0.
"""

from __future__ import annotations

import os
import sys
import time

from hutch import Connection, Queue, RpcServer, Subscriber, WorkerPool


def log_line(line: str) -> None:
    fd = os.open(os.environ["HUTCH_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def main(kind: str, url: str, queue: str, seconds: float) -> None:
    def work(body: str) -> str:
        log_line(f"start {os.getpid()} {time.time():.6f}")
        time.sleep(seconds)
        log_line(f"done {os.getpid()} {time.time():.6f}")
        return body

    with Connection(url) as conn:
        if kind == "subscriber":
            with Subscriber(conn, queue=Queue(queue, expires=120), model=str) as sub:
                log_line(f"ready {os.getpid()} {time.time():.6f}")
                sub.run(work)
        elif kind == "pool":
            pool = WorkerPool(
                conn, queue=Queue(queue, expires=120), handler=work, model=str, concurrency=2
            )
            pool.start()
            log_line(f"ready {os.getpid()} {time.time():.6f}")
            pool.run()
        else:
            server = RpcServer(conn, queue=Queue(queue, expires=120, durable=False))
            server.register(work, name="work")
            server.start()
            log_line(f"ready {os.getpid()} {time.time():.6f}")
            server.run()
    print("returned", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
