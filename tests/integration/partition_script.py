"""A worker process of a partitioned WorkerPool, for the partition tests.

Run as ``python tests/integration/partition_script.py URL QUEUE PARTITIONS CONCURRENCY``.
The handler appends one line per task to ``$HUTCH_TEST_LOG`` (``O_APPEND`` writes of one
short line are atomic, so the processes share the file, in the order they wrote):

* ``ready <pid>`` once the pool consumes,
* ``done <key> <seq> <pid> <redelivered 0|1> <start> <end>`` after a task ran (it is
  acked right after).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from hutch import Message, Queue, WorkerPool

_FD: int | None = None


def log_line(line: str) -> None:
    global _FD
    if _FD is None:
        _FD = os.open(os.environ["HUTCH_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_FD, (line + "\n").encode())


def work_queue(name: str) -> Queue:
    """The work queue shared by the test and the workers (its partitions are durable)."""
    return Queue(name)


def handle(body: Any, message: Message[Any]) -> None:
    start = time.time()
    time.sleep(float(os.environ.get("HUTCH_TEST_TASK_SECONDS", "0")))
    end = time.time()
    log_line(
        f"done {body['key']} {body['seq']} {os.getpid()} {int(message.redelivered)} "
        f"{start:.6f} {end:.6f}"
    )


def main(argv: list[str]) -> int:
    url, queue, partitions, concurrency = argv[1], argv[2], int(argv[3]), int(argv[4])
    pool = WorkerPool(
        url,
        queue=work_queue(queue),
        handler=handle,
        partitions=partitions,
        concurrency=concurrency,
        retry=None,
    )
    pool.start()
    log_line(f"ready {os.getpid()}")
    pool.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
