"""Work queues: one task publisher, four workers in two channels, prefetch 1, ack after work.

The classic RabbitMQ work-queue layout with hutch. Tasks of varying length go to the
durable queue ``task_queue`` as persistent, confirmed messages. Four workers consume it,
two per channel; each channel's consumer holds a window of 2 x prefetch 1 + 2 unacked
messages that its two workers share, and a task is acked only after it is done, so a
worker busy with a long task holds up nothing and the idle workers take the rest (fair
dispatch). Every fourth task here is four times longer than the others.

Run it against any broker; it exits by itself and prints how the tasks were spread::

    python examples/work_queue.py [amqp://guest:guest@localhost:5672/] [--tasks 40]

The URL may also come from ``$HUTCH_URL``. To scale out, run the same workers on more
hosts against the same broker, e.g. ``hutch worker myapp.tasks:work --queue task_queue``.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections import defaultdict

from pydantic import BaseModel

import hutch

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"


class Task(BaseModel):
    run: str  # which run of this example published it
    n: int
    seconds: float  # how long the "heavy computation" takes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "url", nargs="?", help="broker URL (default: $HUTCH_URL, else " + DEFAULT_URL + ")"
    )
    parser.add_argument("--queue", default="task_queue")
    parser.add_argument("--tasks", type=int, default=40)
    args = parser.parse_args(argv)

    run = uuid.uuid4().hex[:8]
    tasks = [Task(run=run, n=i, seconds=0.2 if i % 4 == 3 else 0.05) for i in range(args.tasks)]
    done: dict[str, list[Task]] = defaultdict(list)
    lock = threading.Lock()
    all_done = threading.Event()

    def work(task: Task) -> None:
        # runs on a worker thread; the message is acked when this returns
        if task.run != run:
            return  # left over from an earlier, interrupted run: just ack it
        time.sleep(task.seconds)
        with lock:
            done[threading.current_thread().name].append(task)  # hutch-worker-<pool>-<i>
            if sum(len(d) for d in done.values()) == len(tasks):
                all_done.set()

    with hutch.connect(args.url, connection_name="work-queue-example") as conn:
        # the task publisher: persistent messages on the default exchange, confirmed
        with hutch.TaskQueue(conn, queue=args.queue, model=Task) as publisher:
            publisher.submit_many(tasks).raise_for_failures()
        print(f"published {len(tasks)} tasks to {args.queue!r}")

        pool = hutch.WorkerPool(
            conn,
            queue=args.queue,
            handler=work,
            model=Task,
            concurrency=4,  # four workers...
            channels=2,  # ...two per channel (one consumer each)
            prefetch=1,  # a window of 2 x 1 + 2 unacked tasks per channel
        )
        started = time.monotonic()
        with pool:
            finished = all_done.wait(60)
            makespan = time.monotonic() - started
        if not finished:
            print("timed out waiting for the tasks")
            return 1

    print(f"\n{'worker':<8}{'channel':>8}{'tasks':>7}{'long':>6}{'busy s':>9}")
    for w in pool.stats.workers:
        mine = done.get(f"hutch-worker-{pool.name}-{w.worker}", [])
        longs = sum(t.seconds > 0.1 for t in mine)
        busy = sum(t.seconds for t in mine)
        print(f"{w.worker:<8}{w.channel:>8}{len(mine):>7}{longs:>6}{busy:>9.2f}")
    total = sum(t.seconds for t in tasks)
    ideal = max(total / pool.concurrency, max(t.seconds for t in tasks))
    handled = sorted(t.n for d in done.values() for t in d)
    print(f"\n{len(handled)} tasks done, each exactly once: {handled == list(range(len(tasks)))}")
    print(f"makespan {makespan:.2f} s, ideal {ideal:.2f} s ({makespan / ideal:.2f}x)")
    return 0 if handled == list(range(len(tasks))) else 1


if __name__ == "__main__":
    raise SystemExit(main())
