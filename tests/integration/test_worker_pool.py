"""WorkerPool against a real broker: fair dispatch, retries, dead letters, shutdown, crashes."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from hutch import (
    Connection,
    Message,
    Publisher,
    Queue,
    Reject,
    Retry,
    RetryPolicy,
    TaskQueue,
    WorkerPool,
)
from hutch._amqp import Delivery
from hutch._worker_pool.pool import window
from tests.integration import worker_script
from tests.integration.worker_script import Task, read_log, work_queue
from tests.waits import settle, wait_for

SCRIPT = Path(worker_script.__file__)
ROOT = SCRIPT.parents[2]


@pytest.fixture
def queue_name(conn: Connection, unique_name: str) -> Iterator[str]:
    """A work queue name; the queue, its dead-letter queue and delay queues are deleted after."""
    yield unique_name
    ch = conn.channel()
    ch.delete_queue(unique_name)
    ch.delete_queue(f"{unique_name}.dead")
    for ms in (1, 50, 100, 200, 300, 1000, 2000):
        ch.delete_queue(f"{unique_name}.retry.{ms}")
    ch.close()


def drain(conn: Connection, queue: str) -> list[Delivery]:
    ch = conn.channel()
    got: list[Delivery] = []
    while (d := ch.get(queue)) is not None:
        got.append(d)
        d.ack()
    ch.close()
    return got


def count(conn: Connection, queue: str) -> int:
    ch = conn.channel()
    try:
        return ch.message_count(queue)
    finally:
        ch.close()


def count_consumers(conn: Connection, queue: str) -> int:
    ch = conn.channel()
    try:
        return ch.consumer_count(queue)
    finally:
        ch.close()


# --------------------------------------------------------------------------- fair dispatch


def test_fair_dispatch_with_a_skewed_workload(conn: Connection, queue_name: str) -> None:
    # 4 workers, 100 tasks, every 4th task 4x longer (20 ms vs 5 ms). Round-robin would
    # hand all 25 long tasks to one worker (500 ms busy against 125 ms for the others).
    records: list[tuple[int, str, float]] = []
    lock = threading.Lock()

    def handle(task: Task) -> None:
        conn.clock.sleep(task.seconds)
        with lock:  # the worker thread is named hutch-worker-<pool>-<index>
            records.append((task.id, threading.current_thread().name, task.seconds))

    q = work_queue(queue_name)
    tasks = [Task(id=i, seconds=0.020 if i % 4 == 3 else 0.005) for i in range(100)]
    pool = WorkerPool(conn, queue=q, handler=handle, model=Task, concurrency=4, prefetch=1)
    pool.submit_many(tasks).raise_for_failures()
    with pool:
        wait_for(lambda: len(records) >= 100, 30, "100 tasks", clock=conn.clock)
    assert sorted(r[0] for r in records) == list(range(100))  # each done exactly once
    assert count(conn, queue_name) == 0 and count(conn, f"{queue_name}.dead") == 0

    stats = pool.stats
    assert stats.processed == 100 and stats.failed == 0
    per_worker = collections.Counter(r[1] for r in records)
    by_thread = {f"hutch-worker-{queue_name}-{w.worker}": w.processed for w in stats.workers}
    assert by_thread == dict(per_worker)
    assert len(per_worker) == 4
    busy: dict[str, float] = collections.defaultdict(float)
    longs: collections.Counter[str] = collections.Counter()
    for _, tag, seconds in records:
        busy[tag] += seconds
        longs[tag] += seconds > 0.01
    # fair dispatch balances time, not counts: no worker carries much more than its share
    # (round-robin: 0.5 s against 0.125 s, a ratio of 4)
    assert max(busy.values()) / min(busy.values()) < 1.5, (busy, per_worker, longs)
    # so the workers slowed down by long tasks take fewer tasks than the fast ones
    most, least = max(longs, key=longs.__getitem__), min(longs, key=longs.__getitem__)
    if longs[most] - longs[least] >= 4:  # 60 ms more work: about 12 tasks fewer
        assert per_worker[most] < per_worker[least], (per_worker, longs)


def test_fast_workers_take_more_tasks_than_slow_ones(
    amqp_url: str, conn: Connection, queue_name: str
) -> None:
    # two "hosts" share one queue: one with fast workers (5 ms per task), one with slow
    # workers (20 ms per task). Round-robin would give each host 50 of the 100 tasks.
    done: collections.Counter[int] = collections.Counter()
    by_host: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def make_handler(host: str, seconds: float) -> Callable[[Task], None]:
        def handle(task: Task) -> None:
            conn.clock.sleep(seconds)
            with lock:
                done[task.id] += 1
                by_host[host] += 1

        return handle

    q = work_queue(queue_name)
    with TaskQueue(conn, queue=q, model=Task) as tasks:
        tasks.submit_many([Task(id=i) for i in range(100)]).raise_for_failures()
    with (
        Connection(amqp_url, connection_name="slow-host") as slow_conn,
        WorkerPool(
            slow_conn, queue=q, handler=make_handler("slow", 0.020), model=Task, concurrency=2
        ),
        WorkerPool(conn, queue=q, handler=make_handler("fast", 0.005), model=Task, concurrency=2),
    ):
        wait_for(lambda: sum(done.values()) >= 100, 30, "100 tasks", clock=conn.clock)
    assert sorted(done) == list(range(100)) and set(done.values()) == {1}
    assert by_host["fast"] > 2 * by_host["slow"], by_host  # ideal: 80 against 20


def test_a_busy_pool_holds_no_more_than_its_window(
    amqp_url: str, conn: Connection, queue_name: str
) -> None:
    # two "hosts" on one queue: pool A (2 workers, tasks that last until B is done) and an
    # idle, fast pool B. A prefetches a window of 2 x 1 + 2 = 4 messages (2 in hand, 2
    # waiting for a free worker) and never more, however long it is busy; B takes all the rest.
    q = work_queue(queue_name)
    done: collections.Counter[int] = collections.Counter()
    by_pool: collections.Counter[str] = collections.Counter()
    in_hand = 0
    lock = threading.Lock()
    release = threading.Event()  # A's handlers are busy until the rest is done

    def slow(task: Task) -> None:
        nonlocal in_hand
        with lock:
            in_hand += 1
        release.wait(30)
        with lock:
            in_hand -= 1
            done[task.id] += 1
            by_pool["A"] += 1

    def fast(task: Task) -> None:
        with lock:
            done[task.id] += 1
            by_pool["B"] += 1

    limit = window(2, 1)
    assert limit == 4
    held: list[int] = []
    with (
        Connection(amqp_url, connection_name="busy-host") as busy_conn,
        WorkerPool(busy_conn, queue=q, handler=slow, model=Task, concurrency=2) as pool_a,
        WorkerPool(conn, queue=q, handler=fast, model=Task, concurrency=2),
    ):
        # A's unacked messages: those its handlers run plus those waiting in its inbox
        inbox = pool_a._workers[0].inbox
        assert all(w.inbox is inbox for w in pool_a._workers)  # one shared inbox
        try:
            with TaskQueue(conn, queue=q, model=Task) as tasks:
                tasks.submit_many([Task(id=i) for i in range(30)]).raise_for_failures()
            deadline = time.monotonic() + 30
            # sampled while B works through the queue, until every task is done by B or
            # held by A: A's window is then all that is left of the 30
            while time.monotonic() < deadline:
                with lock:
                    held.append(in_hand + inbox.qsize())
                    if by_pool["B"] + held[-1] >= 30:
                        break
                time.sleep(0.005)
        finally:
            release.set()
        wait_for(lambda: sum(done.values()) >= 30, 30, "30 tasks", clock=conn.clock)
    assert sorted(done) == list(range(30)) and set(done.values()) == {1}, done
    assert max(held) == limit, collections.Counter(held)  # it filled its window, no more
    assert by_pool["A"] <= limit and by_pool["B"] == 30 - by_pool["A"], by_pool
    assert pool_a.stats.processed == by_pool["A"]


def test_seed_layout_four_workers_in_two_channels_prefetch_one(
    conn: Connection, queue_name: str
) -> None:
    # four workers over two channels: one consumer per channel with a window of
    # 2 x prefetch + 2 = 4 unacked messages; all four workers work at once
    in_hand = 0
    peak = 0
    seen: list[str] = []
    lock = threading.Lock()
    release = threading.Event()

    def handle(body: object, message: Message[object]) -> None:
        nonlocal in_hand, peak
        with lock:
            in_hand += 1
            peak = max(peak, in_hand)
            seen.append(message.consumer_tag)
        release.wait(10)
        with lock:
            in_hand -= 1

    pool = WorkerPool(
        conn, queue=work_queue(queue_name), handler=handle, concurrency=4, channels=2, prefetch=1
    )
    with pool:
        for i in range(12):
            pool.submit(i)
        wait_for(lambda: len(seen) >= 4, 10, "four tasks in hand", clock=conn.clock)
        settle(conn, 0.2)  # on RabbitMQ 0.2 s in which no fifth task may start
        # 4 in hand, 4 waiting in the pool (2 per channel), 4 still ready on the broker
        assert peak == 4 and len(seen) == 4
        assert count(conn, queue_name) == 4
        release.set()
        wait_for(lambda: len(seen) == 12, 10, "all tasks", clock=conn.clock)
    assert sorted(w.channel for w in pool.stats.workers) == [0, 0, 1, 1]
    assert len({w.consumer_tag for w in pool.stats.workers}) == 2
    assert pool.stats.processed == 12 and count(conn, queue_name) == 0


# --------------------------------------------------------------------------- failures


class Order(BaseModel):
    id: int
    item: str


def test_always_failing_handler_is_dead_lettered_after_max_attempts(
    conn: Connection, queue_name: str
) -> None:
    calls: list[tuple[str, float, int]] = []

    def handle(body: str, message: Message[str]) -> None:
        calls.append((body, conn.clock.now(), int(message.headers.get("x-hutch-attempts", 0))))  # type: ignore[arg-type]
        if body == "poison":
            raise ValueError("cannot process poison")

    policy = RetryPolicy(max_attempts=3, backoff=0.05, multiplier=2.0)
    pool = WorkerPool(
        conn, queue=work_queue(queue_name), handler=handle, model=str, concurrency=1, retry=policy
    )
    with pool:
        # published together: "good" is queued before the first retry can come back
        pool.submit_many(["poison", "good"]).raise_for_failures()
        wait_for(
            lambda: count(conn, f"{queue_name}.dead") == 1, 10, "the dead letter", clock=conn.clock
        )
    poison = [c for c in calls if c[0] == "poison"]
    assert len(poison) == 3  # exactly max_attempts
    assert [c[2] for c in poison] == [0, 1, 2]  # the attempt count travels in a header
    # the waits happen in the broker, not in the worker: the good message went first
    good_at = next(c[1] for c in calls if c[0] == "good")
    assert poison[0][1] < good_at < poison[1][1]
    assert (
        poison[1][1] - poison[0][1] >= 0.045 and poison[2][1] - poison[1][1] >= 0.095
    )  # no hot loop
    assert set(pool.delay_queues) == {f"{queue_name}.retry.50", f"{queue_name}.retry.100"}

    (dead,) = drain(conn, f"{queue_name}.dead")
    headers = dead.headers
    assert dead.body == b"poison"
    assert headers["x-hutch-attempts"] == 3
    assert headers["x-hutch-error-type"] == "ValueError"
    assert "cannot process poison" in headers["x-hutch-error"]
    assert headers["x-hutch-original-queue"] == queue_name
    stats = pool.stats
    assert (stats.processed, stats.failed, stats.retried, stats.dead_lettered) == (1, 3, 2, 1)
    assert count(conn, queue_name) == 0


def test_transient_failure_succeeds_on_retry(conn: Connection, queue_name: str) -> None:
    attempts: collections.Counter[int] = collections.Counter()
    done: list[int] = []

    def handle(order: Order, message: Message[Order]) -> None:
        attempts[order.id] += 1
        if attempts[order.id] == 1:
            raise TimeoutError("the inventory service timed out")
        assert message.headers["x-hutch-attempts"] == 1
        assert message.headers["x-hutch-error-type"] == "TimeoutError"
        done.append(order.id)

    policy = RetryPolicy(max_attempts=3, backoff=0.05, retry_on=(TimeoutError,))
    with WorkerPool(
        conn, queue=work_queue(queue_name), handler=handle, model=Order, retry=policy
    ) as pool:
        for i in range(5):
            pool.submit(Order(id=i, item="book"))
        wait_for(lambda: len(done) == 5, 10, "five orders", clock=conn.clock)
    assert sorted(done) == list(range(5)) and set(attempts.values()) == {2}
    assert (pool.stats.processed, pool.stats.retried, pool.stats.dead_lettered) == (5, 5, 0)
    assert count(conn, f"{queue_name}.dead") == 0 and count(conn, queue_name) == 0


def test_undecodable_and_invalid_bodies_are_dead_lettered_at_once(
    conn: Connection, queue_name: str
) -> None:
    handled: list[int] = []
    pool = WorkerPool(
        conn,
        queue=work_queue(queue_name),
        handler=lambda order: handled.append(order.id),
        model=Order,
        retry=RetryPolicy(max_attempts=5, backoff=0.05),
    )
    with pool:
        pool.submit(Order(id=1, item="ok"))
        with Publisher(conn, routing_key=queue_name) as raw:
            raw.publish(b"{not json", content_type="application/json")
            raw.publish(b'{"id": "seven", "item": "x"}', content_type="application/json")
            raw.publish(b"plain words", content_type="text/plain")
        pool.submit(Order(id=2, item="ok"))
        wait_for(
            lambda: count(conn, f"{queue_name}.dead") == 3 and len(handled) == 2,
            10,
            "all",
            clock=conn.clock,
        )
    sent = 5
    dead = drain(conn, f"{queue_name}.dead")
    assert len(handled) + len(dead) == sent
    by_body = {d.body: d.headers for d in dead}
    assert by_body[b"{not json"]["x-hutch-error-type"] == "DecodeError"
    assert by_body[b'{"id": "seven", "item": "x"}']["x-hutch-error-type"] == "ValidationError"
    assert "'id'" in by_body[b'{"id": "seven", "item": "x"}']["x-hutch-error"]
    assert by_body[b"plain words"]["x-hutch-error-type"] == "DecodeError"
    assert all(h["x-hutch-attempts"] == 1 for h in by_body.values())  # never retried
    assert pool.stats.retried == 0 and pool.delay_queues == ()


def test_retry_and_reject_signals(conn: Connection, queue_name: str) -> None:
    seen: collections.Counter[str] = collections.Counter()
    done: list[str] = []

    def handle(body: str) -> None:
        seen[body] += 1
        if body == "again" and seen[body] < 3:
            raise Retry(delay=0.05, reason="not yet")
        if body == "never":
            raise Reject("refused by the rules")
        if body == "other":
            raise KeyError("not in retry_on")
        if body == "forever":
            raise Retry()
        done.append(body)

    # only ConnectionError is retried by policy; Retry works regardless
    policy = RetryPolicy(max_attempts=3, backoff=0.05, retry_on=(ConnectionError,))
    pool = WorkerPool(
        conn, queue=work_queue(queue_name), handler=handle, model=str, retry=policy, concurrency=2
    )
    with pool:
        for body in ("again", "never", "other", "forever"):
            pool.submit(body)
        wait_for(
            lambda: count(conn, f"{queue_name}.dead") == 3 and done == ["again"],
            10,
            "all",
            clock=conn.clock,
        )
    assert seen == {"again": 3, "never": 1, "other": 1, "forever": 3}
    dead = {d.body: d.headers for d in drain(conn, f"{queue_name}.dead")}
    assert dead[b"never"]["x-hutch-error-type"] == "Reject"
    assert dead[b"never"]["x-hutch-error"] == "refused by the rules"
    assert dead[b"never"]["x-hutch-attempts"] == 1
    assert dead[b"other"]["x-hutch-error-type"] == "KeyError"
    assert dead[b"other"]["x-hutch-attempts"] == 1
    assert dead[b"forever"]["x-hutch-error-type"] == "Retry"
    assert dead[b"forever"]["x-hutch-attempts"] == 3
    assert "gave up after 3 attempts" in dead[b"forever"]["x-hutch-error"]


# --------------------------------------------------------------------------- long tasks, stop


@pytest.mark.rabbitmq_only("AMQP heartbeats on a real socket")
def test_long_handler_past_three_heartbeats_acks_without_reconnect(
    amqp_url: str, unique_name: str
) -> None:
    done: list[int] = []

    def slow(n: int) -> None:
        time.sleep(3.5)  # 3.5x the heartbeat interval
        done.append(n)

    with Connection(amqp_url, heartbeat=1, connection_name=unique_name) as conn:
        q = Queue(unique_name, durable=False, expires=60)
        pool = WorkerPool(conn, queue=q, handler=slow, model=int, concurrency=2)
        with pool:
            pool.submit(1)
            pool.submit(2)
            wait_for(lambda: len(done) == 2, 15, "the long handlers")
        assert sorted(done) == [1, 2]
        assert conn.recoveries == 0
        assert count(conn, unique_name) == 0  # acked on the original channels
        ch = conn.channel()
        ch.delete_queue(unique_name)
        ch.delete_queue(f"{unique_name}.dead")


def test_stop_finishes_tasks_in_hand_and_requeues_prefetched_ones(
    conn: Connection, queue_name: str
) -> None:
    started: list[int] = []
    finished: list[int] = []
    release = threading.Event()  # the tasks in hand last until the stop has begun

    def handle(n: int) -> None:
        started.append(n)
        release.wait(10)
        finished.append(n)

    # prefetch 2, two workers: a window of 2 x 2 + 2 = 6, two messages in hand and four
    # prefetched; two more stay on the broker
    pool = WorkerPool(
        conn, queue=work_queue(queue_name), handler=handle, model=int, concurrency=2, prefetch=2
    )
    pool.start()
    pool.submit_many(range(8)).raise_for_failures()
    wait_for(lambda: len(started) == 2, 10, "two tasks in hand", clock=conn.clock)
    wait_for(lambda: count(conn, queue_name) == 2, 10, "the window filled", clock=conn.clock)
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            pool.stop()
        except BaseException as exc:  # re-raised on the test's thread below
            errors.append(exc)

    stopper = threading.Thread(target=stop)
    stopper.start()
    try:
        # the stop cancels the consumer first: from then on nothing new is started
        wait_for(
            lambda: count_consumers(conn, queue_name) == 0,
            10,
            "the consumer cancelled",
            clock=conn.clock,
        )
    finally:
        release.set()
        stopper.join(30)
    assert not stopper.is_alive() and not errors, errors
    assert sorted(started) == sorted(finished) and len(finished) == 2
    stats = pool.stats
    assert stats.processed == 2 and stats.requeued == 4
    rest = drain(conn, queue_name)
    assert len(rest) == 6  # nothing lost, nothing acked that was not done
    assert sorted(int(d.body) for d in rest) == sorted(set(range(8)) - set(finished))
    assert sum(d.redelivered for d in rest) == 4  # the prefetched ones went back unstarted


def test_run_returns_when_a_handler_stops_the_pool(conn: Connection, queue_name: str) -> None:
    handled: list[str] = []

    def handle(body: str) -> None:
        handled.append(body)
        if body == "last":
            pool.stop()  # from a handler: starts the stop and returns

    pool = WorkerPool(conn, queue=work_queue(queue_name), handler=handle, model=str, concurrency=1)
    for body in ("a", "b", "last", "never"):
        pool.submit(body)
    started = time.monotonic()
    pool.run(timeout=20)  # on the main thread: installs and restores signal handlers
    assert time.monotonic() - started < 10
    assert handled == ["a", "b", "last"]
    assert pool.stats.processed == 3 and not pool.is_running
    assert [d.body for d in drain(conn, queue_name)] == [b"never"]  # "last" was acked
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# --------------------------------------------------------------------------- worker processes


def spawn_worker(url: str, queue: str, log: Path, concurrency: int = 1) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HUTCH_TEST_LOG": str(log)}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), url, queue, str(concurrency)], env=env, cwd=str(ROOT)
    )


def lines(log: Path, kind: str) -> list[list[str]]:
    return [line for line in read_log(str(log)) if line[0] == kind]


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@pytest.mark.rabbitmq_only("worker processes")
def test_sigterm_finishes_tasks_in_hand_then_exits(
    amqp_url: str, conn: Connection, queue_name: str, tmp_path: Path
) -> None:
    log = tmp_path / "events.log"
    q = work_queue(queue_name)
    with TaskQueue(conn, queue=q, model=Task) as tasks:
        tasks.submit_many(
            [Task(id=i, seconds=1.0 if i < 2 else 0.01) for i in range(6)]
        ).raise_for_failures()
    proc = spawn_worker(amqp_url, queue_name, log, concurrency=2)
    try:
        wait_for(lambda: len(lines(log, "start")) == 2, 20, "two tasks in hand")
        sent_at = time.time()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        stop_process(proc)
    started, done = lines(log, "start"), lines(log, "done")
    assert sorted(int(s[1]) for s in started) == [0, 1]
    assert sorted(int(d[1]) for d in done) == [0, 1]  # finished, not abandoned
    assert all(float(d[3]) > sent_at for d in done)  # they were in hand at SIGTERM
    # acked before exit: only the four unstarted tasks are left, and they are intact
    rest = drain(conn, queue_name)
    assert sorted(Task.model_validate_json(d.body).id for d in rest) == [2, 3, 4, 5]


@pytest.mark.rabbitmq_only("worker processes")
def test_sigkill_mid_task_loses_nothing_with_two_worker_processes(
    amqp_url: str, conn: Connection, queue_name: str, tmp_path: Path
) -> None:
    # scaling out: two worker processes (two "hosts") consume one queue
    log = tmp_path / "events.log"
    TaskQueue(conn, queue=work_queue(queue_name), model=Task).open().close()
    victim = spawn_worker(amqp_url, queue_name, log)
    survivor = spawn_worker(amqp_url, queue_name, log)
    try:
        wait_for(lambda: len(lines(log, "ready")) == 2, 30, "two worker processes")
        with TaskQueue(conn, queue=work_queue(queue_name), model=Task) as tasks:
            tasks.submit_many([Task(id=i, seconds=0.4) for i in range(8)]).raise_for_failures()

        def victim_in_hand() -> bool:
            return any(int(s[2]) == victim.pid for s in lines(log, "start"))

        wait_for(victim_in_hand, 20, "a task in the victim's hands")
        time.sleep(0.1)
        victim.kill()  # SIGKILL mid-task: no chance to ack or clean up
        victim.wait(10)
        wait_for(lambda: len({d[1] for d in lines(log, "done")}) == 8, 30, "all eight tasks")
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(20) == 0
    finally:
        stop_process(victim)
        stop_process(survivor)
    started, done = lines(log, "start"), lines(log, "done")
    done_ids = collections.Counter(int(d[1]) for d in done)
    assert sorted(done_ids) == list(range(8)) and set(done_ids.values()) == {1}  # exactly once
    by_victim = [int(s[1]) for s in started if int(s[2]) == victim.pid]
    victim_done = {int(d[1]) for d in done if int(d[2]) == victim.pid}
    unfinished = [i for i in by_victim if i not in victim_done]
    assert len(unfinished) == 1
    (lost_id,) = unfinished
    again = [s for s in started if int(s[1]) == lost_id and int(s[2]) == survivor.pid]
    assert len(again) == 1 and again[0][3] == "1"  # redelivered=True, seen by the handler
    assert any(int(d[2]) == survivor.pid for d in done)
    assert count(conn, queue_name) == 0


@pytest.mark.rabbitmq_only("worker processes")
def test_process_workers_run_in_parallel_and_survive_a_crash(
    conn: Connection, queue_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "events.log"
    monkeypatch.setenv("HUTCH_TEST_LOG", str(log))  # inherited by the worker processes
    pool = WorkerPool(
        conn,
        queue=work_queue(queue_name),
        handler=worker_script.cpu_task,
        model=Task,
        concurrency=2,
        processes=True,
        retry=None,
    )
    with pool:
        first_pids = {w.pid for w in pool.stats.workers}
        tasks = [Task(id=i, seconds=0.15, crash=i == 2, fail=i == 5) for i in range(8)]
        pool.submit_many(tasks).raise_for_failures()
        with Publisher(conn, routing_key=queue_name) as raw:
            raw.publish(b'{"id": "x"}', content_type="application/json")
        wait_for(
            lambda: len(lines(log, "done")) == 7 and count(conn, f"{queue_name}.dead") == 2,
            30,
            "all tasks",
        )
    started, done = lines(log, "start"), lines(log, "done")
    done_ids = collections.Counter(int(d[1]) for d in done)
    assert sorted(done_ids) == [0, 1, 2, 3, 4, 6, 7] and set(done_ids.values()) == {1}
    pids = {int(d[2]) for d in done}
    assert len(pids) >= 2 and os.getpid() not in pids  # separate interpreters: no shared GIL
    # task 2 killed its process; it was redelivered and done by a replacement process
    crash_runs = [s for s in started if s[1] == "2"]
    assert [s[3] for s in crash_runs] == ["0", "1"]
    stats = pool.stats
    assert stats.crashed == 1 and stats.requeued == 1
    assert len({w.pid for w in stats.workers} - first_pids) == 1  # one process replaced
    dead = {d.body: d.headers for d in drain(conn, f"{queue_name}.dead")}
    invalid = dead.pop(b'{"id": "x"}')
    assert invalid["x-hutch-error-type"] == "ValidationError"  # validated in the child
    ((body, failed),) = dead.items()
    assert Task.model_validate_json(body).id == 5
    assert failed["x-hutch-error-type"] == "ValueError"  # type and message cross the boundary
    assert failed["x-hutch-error"] == "task 5 failed on purpose"
