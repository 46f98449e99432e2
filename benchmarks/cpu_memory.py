"""Client CPU per message and resident memory over a long run: hutch vs raw pika, same broker.

CPU: the measuring process's own CPU time (``time.process_time()``: every thread, user +
system, so hutch's I/O thread counts) around a fixed count, in µs per message:

* publish: 20,000 x 100 B, no confirms (hutch ``Publisher(confirm=False)`` vs pika
  ``basic_publish``);
* publish, confirm each: 2,000 (hutch ``publish`` vs pika ``confirm_delivery`` +
  ``basic_publish``);
* consume: 20,000 from a filled queue, prefetch 100, ack each (hutch ``Subscriber.run`` vs
  pika ``basic_consume``); the queue is filled before the clock starts;
* RPC call: 2,000 sequential ``add`` calls to a server in another process (hutch
  ``RpcClient.call`` vs pika with direct reply-to, as in ``rpc.py``).

hutch and pika take turns in 3 rounds; each figure is the median.

Memory: resident set size (``VmRSS`` from ``/proc/self/status``, after ``gc.collect()``) of a
fresh process before and after 1,000,000 100-byte messages published and consumed in that
process (a publishing thread and a consuming thread, at most 10,000 in the queue; hutch
publishes confirmed batches of 1,000, pika ``basic_publish`` without confirms) and, in
another fresh process, before and after 200,000 RPC calls with 50 in flight. The peak
(``VmHWM``) is shown too.

    python benchmarks/cpu_memory.py [--url amqp://...] [--smoke] [--only cpu|memory]

Counts scale with ``$HUTCH_BENCH_SCALE`` (``HUTCH_BENCH_SCALE=0.05``: 50,000 messages and
10,000 calls; ``--smoke``: tiny). ``run(url)`` returns the figures for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hutch
import rpc as rpc_bench
from _common import broker_url, is_smoke, load_average, scaled, set_smoke

CTX = multiprocessing.get_context("spawn")
BODY = b"x" * 100
PREFETCH = 100
BACKLOG = 10_000  # the memory run's publisher waits while more than this are unconsumed
CHUNK = 1000


# --------------------------------------------------------------------- helpers
def proc_status(field: str) -> float:
    """A ``/proc/self/status`` field in MiB (``VmRSS``, ``VmHWM``); NaN where absent."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return float("nan")


def rss_after_gc() -> float:
    gc.collect()
    return proc_status("VmRSS")


def cpu_us_per(n: int, fn: Callable[[], None]) -> float:
    """µs of this process's CPU time (all threads) per item while ``fn`` handles ``n``."""
    start = time.process_time()
    fn()
    return (time.process_time() - start) / n * 1e6


def _declare(url: str, name: str) -> None:
    with hutch.connect(url, connection_name="bench-cpu-setup") as conn:
        conn.channel().declare([hutch.Queue(name, durable=False)])


def _purge(url: str, name: str) -> None:
    with hutch.connect(url, connection_name="bench-cpu-setup") as conn:
        conn.channel().purge(name)


def _fill(url: str, name: str, n: int) -> None:
    with (
        hutch.connect(url, connection_name="bench-cpu-fill") as conn,
        hutch.Publisher(conn, routing_key=name, model=bytes) as pub,
    ):
        for lo in range(0, n, CHUNK):
            pub.publish_many([BODY] * min(CHUNK, n - lo)).raise_for_failures()


# --------------------------------------------------------------------- CPU contenders
def hutch_publish(url: str, queue: str, n: int, confirm: bool) -> float:
    with (
        hutch.connect(url, connection_name="bench-cpu-hutch") as conn,
        hutch.Publisher(conn, routing_key=queue, model=bytes, confirm=confirm) as pub,
    ):

        def go() -> None:
            for _ in range(n):
                pub.publish(BODY)
            pub.flush()

        us = cpu_us_per(n, go)
    _purge(url, queue)
    return us


def pika_publish(url: str, queue: str, n: int, confirm: bool) -> float:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    if confirm:
        ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/octet-stream")

    def go() -> None:
        for _ in range(n):
            ch.basic_publish("", queue, BODY, props)
        conn.process_data_events(0)

    us = cpu_us_per(n, go)
    conn.close()
    _purge(url, queue)
    return us


def hutch_consume(url: str, queue: str, n: int) -> float:
    _fill(url, queue, n)
    with hutch.connect(url, connection_name="bench-cpu-hutch") as conn:
        sub = hutch.Subscriber(conn, queue=queue, model=bytes, prefetch=PREFETCH)
        with sub:

            def go() -> None:
                sub.run(lambda _body: None, limit=n)

            return cpu_us_per(n, go)


def pika_consume(url: str, queue: str, n: int) -> float:
    _fill(url, queue, n)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=PREFETCH)
    count = 0

    def on_message(c: Any, method: Any, _props: Any, _body: bytes) -> None:
        nonlocal count
        count += 1
        c.basic_ack(method.delivery_tag)
        if count == n:
            c.stop_consuming()

    def go() -> None:
        ch.basic_consume(queue, on_message)
        ch.start_consuming()

    us = cpu_us_per(n, go)
    conn.close()
    return us


def rpc_calls(client: Any, n: int) -> float:
    def go() -> None:
        for i in range(n):
            if client.call(i) != i + 1:
                raise RuntimeError("wrong reply")

    return cpu_us_per(n, go)


def measure_cpu(url: str, rounds: int) -> dict[str, Any]:
    publishes, each, consumes, calls = (
        scaled(20_000, 200),
        scaled(2_000, 50),
        scaled(20_000, 200),
        scaled(2_000, 50),
    )
    queue = f"bench-cpu-{uuid.uuid4().hex[:8]}"
    _declare(url, queue)
    contenders: dict[str, dict[str, Callable[[], float]]] = {
        f"publish ({publishes}, no confirms)": {
            "pika": lambda: pika_publish(url, queue, publishes, False),
            "hutch": lambda: hutch_publish(url, queue, publishes, False),
        },
        f"publish, confirm each ({each})": {
            "pika": lambda: pika_publish(url, queue, each, True),
            "hutch": lambda: hutch_publish(url, queue, each, True),
        },
        f"consume + ack ({consumes}, prefetch {PREFETCH})": {
            "pika": lambda: pika_consume(url, queue, consumes),
            "hutch": lambda: hutch_consume(url, queue, consumes),
        },
    }
    samples: dict[str, dict[str, list[float]]] = {
        name: {"pika": [], "hutch": []} for name in contenders
    }
    rpc_name = f"RPC call, sequential ({calls})"
    samples[rpc_name] = {"pika": [], "hutch": []}
    servers: dict[str, rpc_bench.ServerProcess] = {}
    clients: dict[str, Any] = {}
    try:
        for kind in ("pika", "hutch"):
            rpc_queue = f"bench-cpu-rpc-{kind}-{uuid.uuid4().hex[:8]}"
            servers[kind] = rpc_bench.ServerProcess(kind, url, rpc_queue)
            clients[kind] = rpc_bench.CLIENTS[kind](url, rpc_queue)
            rpc_calls(clients[kind], min(200, calls))  # warm-up
        for _ in range(rounds):
            for name, pair in contenders.items():
                for kind, fn in pair.items():
                    samples[name][kind].append(fn())
            for kind, client in clients.items():
                samples[rpc_name][kind].append(rpc_calls(client, calls))
    finally:
        for client in clients.values():
            client.close()
        for server in servers.values():
            server.close()
        with hutch.connect(url, connection_name="bench-cpu-cleanup") as conn:
            conn.channel().delete_queue(queue)
    return {
        name: {kind: statistics.median(values) for kind, values in pair.items()}
        for name, pair in samples.items()
    }


# --------------------------------------------------------------------- memory (own process)
def _memory_messages(kind: str, url: str, total: int) -> dict[str, float]:
    queue = f"bench-mem-{kind}-{uuid.uuid4().hex[:8]}"
    _declare(url, queue)
    consumed = target = 0
    progress = threading.Condition()
    errors: list[BaseException] = []

    def counted() -> None:
        nonlocal consumed
        with progress:
            consumed += 1
            if consumed % CHUNK == 0 or consumed == target:
                progress.notify_all()

    if kind == "hutch":
        conn = hutch.connect(url, connection_name="bench-mem-hutch")
        pub = hutch.Publisher(conn, routing_key=queue, model=bytes).open()
        sub = hutch.Subscriber(conn, queue=queue, model=bytes, prefetch=PREFETCH).open()

        def publish(count: int) -> None:
            pub.publish_many([BODY] * count).raise_for_failures()

        def consume(count: int) -> None:
            sub.run(lambda _body: counted(), limit=count)

        def close() -> None:
            sub.close()
            pub.close()
            conn.close()

    else:
        pconn = pika.BlockingConnection(pika.URLParameters(url))
        pch = pconn.channel()
        props = pika.BasicProperties(delivery_mode=2, content_type="application/octet-stream")
        cconn = pika.BlockingConnection(pika.URLParameters(url))  # the consuming thread's

        def publish(count: int) -> None:
            for _ in range(count):
                pch.basic_publish("", queue, BODY, props)
            pconn.process_data_events(0)

        def consume(count: int) -> None:
            ch = cconn.channel()
            ch.basic_qos(prefetch_count=PREFETCH)
            seen = 0

            def on_message(c: Any, method: Any, _props: Any, _body: bytes) -> None:
                nonlocal seen
                seen += 1
                counted()
                c.basic_ack(method.delivery_tag)
                if seen == count:
                    c.stop_consuming()

            ch.basic_consume(queue, on_message)
            ch.start_consuming()
            ch.close()

        def close() -> None:
            pconn.close()
            cconn.close()

    def _backlog_ok(sent: int, count: int) -> bool:
        return sent - (consumed - (target - count)) < BACKLOG or bool(errors)

    def run_phase(count: int) -> None:
        nonlocal target
        target = consumed + count
        consumer = threading.Thread(target=lambda: _guard(consume, count, errors), daemon=True)
        consumer.start()
        published = 0
        while published < count:
            backlog_ok = partial(_backlog_ok, published, count)
            with progress:
                progress.wait_for(backlog_ok, timeout=60)
            if errors:
                break
            step = min(CHUNK, count - published)
            publish(step)
            published += step
        consumer.join(600)
        if errors:
            raise errors[0]
        if consumed != target:
            raise RuntimeError(f"{kind}: {consumed} of {target} messages consumed")

    try:
        run_phase(min(10_000, total))  # warm-up: imports, buffers, caches
        before = rss_after_gc()
        started = time.monotonic()
        run_phase(total)
        seconds = time.monotonic() - started
        after = rss_after_gc()
    finally:
        close()
        with hutch.connect(url, connection_name="bench-mem-cleanup") as c:
            c.channel().delete_queue(queue)
    return {
        "before_mib": before,
        "after_mib": after,
        "growth_mib": after - before,
        "peak_mib": max(proc_status("VmHWM"), after),  # VmHWM is updated lazily
        "per_s": total / seconds,
    }


def _guard(fn: Callable[[int], None], count: int, errors: list[BaseException]) -> None:
    try:
        fn(count)
    except BaseException as exc:
        errors.append(exc)


def _memory_rpc(kind: str, url: str, total: int, in_flight: int = 50) -> dict[str, float]:
    queue = f"bench-mem-rpc-{kind}-{uuid.uuid4().hex[:8]}"
    server = rpc_bench.ServerProcess(kind, url, queue)
    try:
        client = rpc_bench.CLIENTS[kind](url, queue)
        try:
            client.flight(min(5_000, total), in_flight)  # warm-up
            before = rss_after_gc()
            started = time.monotonic()
            done = 0
            while done < total:  # in steps, so a step's bookkeeping is bounded
                step = min(10_000, total - done)
                client.flight(step, in_flight)
                done += step
            seconds = time.monotonic() - started
            after = rss_after_gc()
        finally:
            client.close()
    finally:
        server.close()
    return {
        "before_mib": before,
        "after_mib": after,
        "growth_mib": after - before,
        "peak_mib": max(proc_status("VmHWM"), after),  # VmHWM is updated lazily
        "per_s": total / seconds,
    }


def _memory_child(what: str, kind: str, url: str, total: int, results: Any) -> None:
    try:
        fn = _memory_messages if what == "messages" else _memory_rpc
        results.put(("ok", fn(kind, url, total)))
    except BaseException as exc:
        results.put(("error", f"{what} {kind}: {exc!r}"))
        raise


def measure_memory(url: str) -> dict[str, Any]:
    """Each kind and workload in a fresh process, one after another."""
    totals = {"messages": scaled(1_000_000, 2_000), "rpc": scaled(200_000, 500)}
    out: dict[str, Any] = {"totals": totals}
    for what, total in totals.items():
        out[what] = {}
        for kind in ("pika", "hutch"):
            results: Any = CTX.Queue()
            child = CTX.Process(
                target=_memory_child, args=(what, kind, url, total, results), daemon=True
            )
            child.start()
            status, detail = results.get(timeout=3600)
            child.join(60)
            if status != "ok":
                raise RuntimeError(str(detail))
            out[what][kind] = detail
            print(
                f"  memory, {total:,} {what:<8} {kind:>5}: {detail['before_mib']:.1f} -> "
                f"{detail['after_mib']:.1f} MiB (peak {detail['peak_mib']:.1f}) "
                f"at {detail['per_s']:,.0f}/s",
                flush=True,
            )
    return out


# --------------------------------------------------------------------- the run
def run(url: str, *, rounds: int | None = None, only: str | None = None) -> dict[str, Any]:
    """CPU per message (hutch vs pika) and memory over a long run; rows for ``run_all.py``."""
    rounds = rounds or (1 if is_smoke() else 3)
    result: dict[str, Any] = {
        "title": "Client CPU per message and memory over a long run",
        "rows": [],
        "notes": [
            "CPU: µs of the client process's CPU time (all its threads) per message; lower "
            "is better. Memory: resident set size after the run, 'before' in the row's name.",
            f"Measured with {load_average()}.",
        ],
        "params": {"rounds": rounds, "load": load_average()},
    }
    if only in (None, "cpu"):
        cpu = measure_cpu(url, rounds)
        result["cpu_us_per_message"] = cpu
        for name, figures in cpu.items():
            result["rows"].append(
                {
                    "name": f"CPU per message: {name}",
                    "hutch": figures["hutch"],
                    "baseline": figures["pika"],
                    "baseline_name": "raw pika",
                    "ratio": figures["hutch"] / figures["pika"],
                    "unit": "µs",
                    "target": None,
                    "lower_is_better": True,
                }
            )
    if only in (None, "memory"):
        memory = measure_memory(url)
        result["memory"] = memory
        for what, label in (("messages", "messages"), ("rpc", "RPC calls")):
            h, p = memory[what]["hutch"], memory[what]["pika"]
            total = memory["totals"][what]
            result["rows"].append(
                {
                    "name": f"RSS after {total:,} {label} (before: {h['before_mib']:.1f} MiB)",
                    "hutch": h["after_mib"],
                    "baseline": p["after_mib"],
                    "baseline_name": f"raw pika (before: {p['before_mib']:.1f} MiB)",
                    "ratio": h["after_mib"] / p["after_mib"],
                    "unit": "MiB",
                    "target": None,
                    "lower_is_better": True,
                }
            )
    return result


def print_report(result: dict[str, Any]) -> None:
    print(
        f"\n{result['title']} (median of {result['params']['rounds']} rounds; {result['params']['load']})"
    )
    cpu = result.get("cpu_us_per_message")
    if cpu:
        print(f"{'CPU µs per message':46} {'hutch':>9} {'pika':>9} {'ratio':>6}")
        for name, f in cpu.items():
            print(f"{name:46} {f['hutch']:>9.1f} {f['pika']:>9.1f} {f['hutch'] / f['pika']:>6.2f}")
    memory = result.get("memory")
    if memory:
        print(
            f"\n{'resident memory (MiB)':34} {'before':>8} {'after':>8} {'growth':>8} {'peak':>8}"
        )
        for what in ("messages", "rpc"):
            for kind in ("hutch", "pika"):
                m = memory[what][kind]
                label = f"{memory['totals'][what]:,} {what}, {kind}"
                print(
                    f"{label:34} {m['before_mib']:>8.1f} {m['after_mib']:>8.1f} "
                    f"{m['growth_mib']:>+8.1f} {m['peak_mib']:>8.1f}"
                )
            h, p = memory[what]["hutch"], memory[what]["pika"]
            print(
                f"{'  ratio hutch/pika, after':34} {'':8} {h['after_mib'] / p['after_mib']:>8.2f}"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--url", help="broker URL (default: $HUTCH_URL, else a throwaway local node)")
    p.add_argument("--rounds", type=int, default=None, help="median of this many (default 3)")
    p.add_argument("--only", choices=["cpu", "memory"], help="one half only")
    p.add_argument("--smoke", action="store_true", help="tiny counts, 1 round: does it work?")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = p.parse_args(argv)
    if args.smoke:
        set_smoke()
    with broker_url(args.url) as url:
        result = run(url, rounds=args.rounds, only=args.only)
    print_report(result)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
