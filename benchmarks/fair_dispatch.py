"""Fair dispatch under a skewed workload: hutch WorkerPool vs hand-written pika vs round-robin.

Workload: N tasks whose handler sleeps 0-5 ms, every 4th task four times longer (0-20 ms),
random seed 42; 4 workers. Three contenders on the same broker in the same run:

* hutch ``WorkerPool(concurrency=4, prefetch=1)``;
* hand-written pika: 4 threads, each with its own ``BlockingConnection``,
  ``basic_qos(prefetch_count=1)`` and ``basic_ack`` after the work (the tutorial's layout);
* round-robin: the same pika workers without ``basic_qos`` (unlimited prefetch).

The workers are consuming before the tasks are published (so round-robin really is
round-robin, not "first consumer takes all"). Makespan is from the first task's start to
the last task's end; ideal = max(sum of durations / workers, longest task).

Also: throughput of empty tasks at concurrency 4, prefetch 1, hutch vs the pika workers.

    python benchmarks/fair_dispatch.py [--url amqp://...] [--tasks 1500] [--empty 8000] [--repeats 3]

Without ``--url`` or ``$HUTCH_URL`` a throwaway broker is started. ``run(url)`` returns
the figures as a dict (for ``benchmarks/run_all.py``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hutch
from _common import broker_url

WORKERS = 4
SEED = 42


def skewed_durations(n: int, seed: int = SEED) -> list[float]:
    """Seconds per task: 0-5 ms, every 4th task 4x longer (0-20 ms)."""
    rng = random.Random(seed)
    return [rng.uniform(0.0, 0.005) * (4 if i % 4 == 3 else 1) for i in range(n)]


class Tracker:
    """Records when each task started and ended; signals when all are done."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.seen: set[int] = set()
        self.duplicates = 0
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self, task: int, seconds: float) -> None:
        t0 = time.perf_counter()
        if seconds > 0:
            time.sleep(seconds)
        t1 = time.perf_counter()
        with self.lock:
            self.starts.append(t0)
            self.ends.append(t1)
            if task in self.seen:
                self.duplicates += 1
            self.seen.add(task)
            if len(self.seen) == self.n:
                self.done.set()

    @property
    def makespan(self) -> float:
        return max(self.ends) - min(self.starts)


def publish(url: str, queue: str, n: int) -> None:
    with hutch.connect(url, connection_name="bench-publisher") as conn:
        tasks = hutch.TaskQueue(conn, queue=hutch.Queue(queue, durable=False), model=int)
        with tasks:
            for lo in range(0, n, 1000):
                tasks.submit_many(range(lo, min(n, lo + 1000))).raise_for_failures()


def delete(url: str, *queues: str) -> None:
    with hutch.connect(url, connection_name="bench-cleanup") as conn:
        ch = conn.channel()
        for q in queues:
            ch.delete_queue(q)


# --------------------------------------------------------------------------- contenders


def hutch_pool(
    url: str, queue: str, durations: list[float], prefill: bool = False, timeout: float = 300
) -> Tracker:
    tracker = Tracker(len(durations))
    if prefill:
        publish(url, queue, len(durations))

    def handle(task: int) -> None:
        tracker.run(task, durations[task])

    with hutch.connect(url, connection_name="bench-hutch") as conn:
        pool = hutch.WorkerPool(
            conn,
            queue=hutch.Queue(queue, durable=False),
            handler=handle,
            model=int,
            concurrency=WORKERS,
            prefetch=1,
        )
        with pool:
            if not prefill:
                publish(url, queue, len(durations))
            if not tracker.done.wait(timeout):
                raise RuntimeError("hutch pool did not finish")
    return tracker


def pika_workers(
    url: str,
    queue: str,
    durations: list[float],
    prefetch: int | None,
    prefill: bool = False,
    timeout: float = 300,
) -> Tracker:
    """4 hand-written pika consumer threads, one BlockingConnection each."""
    tracker = Tracker(len(durations))
    if prefill:
        publish(url, queue, len(durations))
    ready = threading.Barrier(WORKERS + 1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(url))
            ch = conn.channel()
            ch.queue_declare(queue, durable=False)
            if prefetch is not None:
                ch.basic_qos(prefetch_count=prefetch)

            def on_message(c: Any, method: Any, _props: Any, body: bytes) -> None:
                task = int(body)
                tracker.run(task, durations[task])
                c.basic_ack(method.delivery_tag)

            ch.basic_consume(queue, on_message)
        except BaseException as exc:
            errors.append(exc)
            ready.abort()
            raise
        ready.wait()
        while not stop.is_set():
            conn.process_data_events(time_limit=0.05)
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    try:
        ready.wait(30)
    except threading.BrokenBarrierError:
        raise RuntimeError(f"pika workers failed to start: {errors}") from None
    if not prefill:
        publish(url, queue, len(durations))
    finished = tracker.done.wait(timeout)
    stop.set()
    for t in threads:
        t.join(10)
    if not finished:
        raise RuntimeError("pika workers did not finish")
    return tracker


# --------------------------------------------------------------------------- the run


def _measure(
    url: str, name: str, fn: Callable[[str, str, list[float]], Tracker], durations: list[float]
) -> Tracker:
    queue = f"bench-fair-{name}-{uuid.uuid4().hex[:8]}"
    try:
        tracker = fn(url, queue, durations)
    finally:
        delete(url, queue, f"{queue}.dead")
    if tracker.duplicates:
        raise RuntimeError(f"{name}: {tracker.duplicates} tasks were handled twice")
    return tracker


def run(
    url: str, *, tasks: int = 1500, empty: int = 8000, repeats: int = 3, seed: int = SEED
) -> dict[str, Any]:
    """Run both benchmarks against ``url`` and return the figures (medians of ``repeats``).

    The contenders take turns in every repetition, so a burst of load elsewhere on the
    machine hits them alike.
    """
    durations = skewed_durations(tasks, seed)
    ideal = max(sum(durations) / WORKERS, max(durations))
    contenders: dict[str, Callable[[str, str, list[float]], Tracker]] = {
        "hutch WorkerPool (prefetch 1)": hutch_pool,
        "hand-written pika (prefetch 1)": lambda u, q, d: pika_workers(u, q, d, prefetch=1),
        "round-robin (no qos)": lambda u, q, d: pika_workers(u, q, d, prefetch=None),
    }
    makespans: dict[str, list[float]] = {name: [] for name in contenders}
    # empty tasks: the queue is filled first, then drained (measures consuming, not publishing)
    zero = [0.0] * empty
    empties: dict[str, Callable[[str, str, list[float]], Tracker]] = {
        "hutch": lambda u, q, d: hutch_pool(u, q, d, prefill=True),
        "pika": lambda u, q, d: pika_workers(u, q, d, prefetch=1, prefill=True),
    }
    rates: dict[str, list[float]] = {name: [] for name in empties}
    for _ in range(repeats):
        for name, fn in contenders.items():
            makespans[name].append(_measure(url, name.split()[0], fn, durations).makespan)
        for name, fn in empties.items():
            rates[name].append(empty / _measure(url, f"{name}-empty", fn, zero).makespan)

    fair: dict[str, Any] = {
        "tasks": tasks,
        "workers": WORKERS,
        "seed": seed,
        "repeats": repeats,
        "ideal_s": ideal,
    }
    for name, values in makespans.items():
        makespan = statistics.median(values)
        fair[name] = {"makespan_s": makespan, "vs_ideal": makespan / ideal, "runs_s": values}
    hutch_rate, pika_rate = statistics.median(rates["hutch"]), statistics.median(rates["pika"])
    throughput = {
        "tasks": empty,
        "concurrency": WORKERS,
        "prefetch": 1,
        "hutch_msgs_per_s": hutch_rate,
        "pika_msgs_per_s": pika_rate,
        "ratio": hutch_rate / pika_rate,
        "runs_msgs_per_s": rates,
    }
    return {"fair_dispatch": fair, "empty_task_throughput": throughput}


def print_report(figures: dict[str, Any]) -> None:
    fair = figures["fair_dispatch"]
    print(
        f"\nfair dispatch: {fair['tasks']} tasks, 0-20 ms skewed (every 4th 4x longer, "
        f"seed {fair['seed']}), {fair['workers']} workers; ideal {fair['ideal_s']:.3f} s; "
        f"median of {fair['repeats']} runs"
    )
    print(f"{'contender':34} {'makespan':>10} {'/ ideal':>8}")
    for name, value in fair.items():
        if isinstance(value, dict):
            print(f"{name:34} {value['makespan_s']:>8.3f} s {value['vs_ideal']:>7.2f}x")
    tp = figures["empty_task_throughput"]
    print(
        f"\nempty tasks: {tp['tasks']} at concurrency {tp['concurrency']}, prefetch {tp['prefetch']}"
    )
    print(f"{'contender':34} {'msgs/s':>10} {'vs pika':>8}")
    print(f"{'hutch WorkerPool':34} {tp['hutch_msgs_per_s']:>10.0f} {tp['ratio']:>7.2f}x")
    print(f"{'hand-written pika':34} {tp['pika_msgs_per_s']:>10.0f} {1.0:>7.2f}x")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="broker URL (default: $HUTCH_URL, else a throwaway local node)")
    p.add_argument("--tasks", type=int, default=1500)
    p.add_argument("--empty", type=int, default=8000)
    p.add_argument("--repeats", type=int, default=3, help="median of this many runs")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = p.parse_args(argv)
    with broker_url(args.url) as url:
        figures = run(url, tasks=args.tasks, empty=args.empty, repeats=args.repeats)
    print_report(figures)
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
