"""Partitioned work queues against a real broker: per-key order across worker processes."""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hutch import Connection, TaskQueue, WorkerPool
from hutch._delay import delay_queue
from hutch._worker_pool.partitions import partition_exchange, partition_names
from tests.integration.partition_script import work_queue

pytestmark = pytest.mark.rabbitmq_only("x-consistent-hash exchange plugin and worker processes")

SCRIPT = Path(__file__).with_name("partition_script.py")
ROOT = Path(__file__).parents[2]

MESSAGES = 10_000
KEYS = 50
PARTITIONS = 6


@pytest.fixture
def partitioned(conn: Connection, unique_name: str) -> Iterator[str]:
    yield unique_name
    ch = conn.channel()
    q = work_queue(unique_name)
    for name in [*partition_names(q, PARTITIONS), f"{unique_name}.dead"]:
        ch.delete_queue(name)
    ch.delete_exchange(partition_exchange(q))
    ch.close()


def read(path: Path) -> list[list[str]]:
    try:
        return [line.split() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def test_submit_needs_a_key_exactly_when_partitioned(conn: Connection, partitioned: str) -> None:
    with TaskQueue(conn, queue=partitioned, partitions=PARTITIONS) as tasks:
        with pytest.raises(ValueError, match="submit with key="):
            tasks.submit({"x": 1})
        tasks.submit({"x": 1}, key="a")
    with TaskQueue(conn, queue=f"{partitioned}.plain") as plain:
        with pytest.raises(ValueError, match="partitions=N"):
            plain.submit({"x": 1}, key="a")
    conn.channel().delete_queue(f"{partitioned}.plain")
    with pytest.raises(ValueError, match="prefetch must be 1"):
        WorkerPool(conn, queue="q", handler=print, partitions=4, prefetch=2)


def test_delayed_submits_share_one_delay_queue_and_hash_like_the_others(
    conn: Connection, partitioned: str
) -> None:
    # the exchange hashes the key's header: a delayed task lands in its key's partition,
    # and the delay queue is one per delay, not one per key (keys may be millions)
    q = work_queue(partitioned)
    keys = [f"customer-{i}" for i in range(8)]
    exchange = partition_exchange(q)
    shared = delay_queue(exchange, q.name, 300, durable=True).name
    ch = conn.channel()
    try:
        with TaskQueue(conn, queue=q, partitions=PARTITIONS) as tasks:
            for key in keys:
                tasks.submit({"key": key, "delayed": False}, key=key)
                tasks.submit({"key": key, "delayed": True}, key=key, delay=0.3)
        assert ch.exists("queue", shared)
        for key in keys:
            assert not ch.exists("queue", delay_queue(exchange, key, 300, durable=True).name)
        got: list[tuple[str, str]] = []  # (partition, key); partitions refuse basic.get

        def take(name: str, delivery: Any) -> None:
            got.append((name, json.loads(delivery.body)["key"]))
            delivery.ack()

        for name in partition_names(q, PARTITIONS):
            ch.consume(name, functools.partial(take, name))
        deadline = time.monotonic() + 15
        while len(got) < 2 * len(keys) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(got) == 2 * len(keys)
        where: dict[str, set[str]] = defaultdict(set)
        for name, key in got:
            where[key].add(name)
        assert sorted(where) == sorted(keys)
        assert all(len(partitions) == 1 for partitions in where.values()), where
    finally:
        ch.delete_queue(shared)
        ch.close()


def test_equal_keys_stay_in_order_within_a_pool(conn: Connection, partitioned: str) -> None:
    # several workers, many keys: each key's tasks run in submit order, never two at once
    seen: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    lock = threading.Lock()

    def handle(body: Any) -> None:
        start = time.monotonic()
        time.sleep(0.002)
        with lock:
            seen[str(body["key"])].append((body["seq"], start, time.monotonic()))

    with TaskQueue(conn, queue=work_queue(partitioned), partitions=PARTITIONS) as tasks:
        for i in range(600):
            key = i % 12
            tasks.submit({"key": key, "seq": i // 12}, key=str(key))
    pool = WorkerPool(
        conn,
        queue=work_queue(partitioned),
        handler=handle,
        partitions=PARTITIONS,
        concurrency=4,
        retry=None,
    )
    with pool:
        deadline = time.monotonic() + 30
        while sum(len(v) for v in seen.values()) < 600 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sorted(seen) == sorted(str(k) for k in range(12))
    busy_workers = sum(1 for w in pool.stats.workers if w.processed)
    assert busy_workers > 1  # partitions ran in parallel
    for runs in seen.values():
        assert [seq for seq, _, _ in runs] == list(range(50))
        for (_, _, end), (_, start, _) in itertools.pairwise(runs):
            assert start >= end  # one at a time


@pytest.mark.timeout(240)
def test_three_processes_keep_per_key_order_when_one_is_killed(
    amqp_url: str, conn: Connection, partitioned: str, tmp_path: Path
) -> None:
    log = tmp_path / "events.log"
    env = {
        **os.environ,
        "HUTCH_TEST_LOG": str(log),
        "HUTCH_TEST_TASK_SECONDS": "0.0005",
        "PYTHONPATH": str(ROOT),
    }
    # declare the topology first, so no task is submitted before the partitions exist
    TaskQueue(conn, queue=work_queue(partitioned), partitions=PARTITIONS).open().close()
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), amqp_url, partitioned, str(PARTITIONS), "2"],
            env=env,
        )
        for _ in range(3)
    ]
    try:
        deadline = time.monotonic() + 60
        while sum(1 for e in read(log) if e[0] == "ready") < 3:
            assert time.monotonic() < deadline, "worker processes did not start"
            assert all(p.poll() is None for p in procs)
            time.sleep(0.1)

        submitted = threading.Event()

        def submit_all() -> None:
            with TaskQueue(conn, queue=work_queue(partitioned), partitions=PARTITIONS) as tq:
                for i in range(MESSAGES):
                    key = f"k{i % KEYS}"
                    tq.submit({"key": key, "seq": i // KEYS}, key=key)
            submitted.set()

        publisher = threading.Thread(target=submit_all, daemon=True)
        publisher.start()

        deadline = time.monotonic() + 120
        while sum(1 for e in read(log) if e[0] == "done") < MESSAGES * 3 // 10:
            assert time.monotonic() < deadline, "workers made no progress"
            time.sleep(0.05)
        # the first process to consume held every partition; it hands the extras back
        by_pid = Counter(e[3] for e in read(log) if e[0] == "done")
        while len(by_pid) < 3 and time.monotonic() < deadline and not submitted.is_set():
            time.sleep(0.05)
            by_pid = Counter(e[3] for e in read(log) if e[0] == "done")
        assert len(by_pid) == 3, f"the partitions were not spread over the processes: {by_pid}"
        victim_pid = int(by_pid.most_common(1)[0][0])
        victim = next(p for p in procs if p.pid == victim_pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.time()

        done: set[tuple[str, int]] = set()
        while len(done) < MESSAGES:
            assert time.monotonic() < deadline, f"only {len(done)} of {MESSAGES} tasks ran"
            time.sleep(0.2)
            done = {(e[1], int(e[2])) for e in read(log) if e[0] == "done"}
        publisher.join(30)
        assert submitted.is_set()
        time.sleep(0.5)  # a late duplicate would show up now
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()

    events = [e for e in read(log) if e[0] == "done"]
    runs: dict[str, list[list[str]]] = defaultdict(list)
    for e in events:
        runs[e[1]].append(e)
    survivors = {str(p.pid) for p in procs if p.pid != victim_pid}
    took_over: set[str] = set()
    repeated = 0
    for key, key_runs in runs.items():
        seqs = [int(e[2]) for e in key_runs]
        # nothing lost, nothing out of order; a repeat only right after itself...
        collapsed = [s for i, s in enumerate(seqs) if i == 0 or s != seqs[i - 1]]
        assert collapsed == list(range(MESSAGES // KEYS)), key
        for prev, cur in itertools.pairwise(key_runs):
            assert float(cur[5]) >= float(prev[6]), f"{key}: two tasks at once"
            if prev[2] == cur[2]:
                # ...where the killed process had run it, and the broker redelivered it
                repeated += 1
                assert prev[3] == str(victim_pid)
                assert cur[4] == "1"
                assert float(cur[5]) >= killed_at - 0.5
            if prev[3] == str(victim_pid) and cur[3] in survivors:
                took_over.add(key)
    # at most one message in hand per partition when the process died
    assert repeated <= PARTITIONS
    assert took_over, "no surviving process took over the killed one's partitions"
    print(
        f"\n{len(events)} tasks ran for {MESSAGES} submitted; {repeated} repeated at the kill "
        f"point; per process: {dict(Counter(e[3] for e in events))}; "
        f"{len(took_over)} keys taken over"
    )
