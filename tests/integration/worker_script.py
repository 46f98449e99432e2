"""Worker programs and handlers for the WorkerPool fault tests.

Run as a separate worker process (so tests can SIGTERM or SIGKILL it)::

    python tests/integration/worker_script.py URL QUEUE CONCURRENCY

Handlers append one line per event to the file named by ``$HUTCH_TEST_LOG`` (``O_APPEND``
writes of one short line are atomic, so several processes can share the file):

* ``ready <pid>`` once the pool consumes,
* ``start <id> <pid> <redelivered 0|1> <time>`` when a task starts,
* ``done <id> <pid> <time>`` when it finished (it is acked right after).

The module is importable too (``tests.integration.worker_script``): process-mode tests
use its module-level handlers, which worker processes import by name.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from pydantic import BaseModel

from hutch import Message, Queue, WorkerPool


class Task(BaseModel):
    id: int
    seconds: float = 0.0
    crash: bool = False
    fail: bool = False


def work_queue(name: str) -> Queue:
    """The queue declaration shared by the tests and this script (durable, self-expiring)."""
    return Queue(name, expires=120)


def log_line(line: str) -> None:
    fd = os.open(os.environ["HUTCH_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_log(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def sleepy_task(task: Task, message: Message[Task]) -> None:
    """Sleep for task.seconds (an I/O-bound task)."""
    log_line(f"start {task.id} {os.getpid()} {int(message.redelivered)} {time.time():.6f}")
    time.sleep(task.seconds)
    log_line(f"done {task.id} {os.getpid()} {time.time():.6f}")


def cpu_task(task: Task, message: Message[Task]) -> None:
    """Burn CPU for about task.seconds; crash the worker process or fail on request."""
    log_line(f"start {task.id} {os.getpid()} {int(message.redelivered)} {time.time():.6f}")
    if task.crash and not message.redelivered:
        os.kill(os.getpid(), signal.SIGKILL)
    if task.fail:
        raise ValueError(f"task {task.id} failed on purpose")
    deadline = time.process_time() + task.seconds
    n = 0
    while time.process_time() < deadline:
        n += sum(i * i for i in range(1000))
    log_line(f"done {task.id} {os.getpid()} {time.time():.6f}")


def main(argv: list[str]) -> int:
    url, queue, concurrency = argv[1], argv[2], int(argv[3])
    pool = WorkerPool(
        url, queue=work_queue(queue), handler=sleepy_task, model=Task, concurrency=concurrency
    )
    pool.start()
    log_line(f"ready {os.getpid()}")
    pool.run()  # until SIGTERM / SIGINT: finish the tasks in hand, ack them, exit
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
