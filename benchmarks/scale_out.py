"""Scale-out: 1, 2 and 4 worker processes (and RPC server processes) on one queue, hutch vs raw pika.

Every process is a separate OS process (``multiprocessing`` spawn) with its own connection,
against the same broker in the same run. Three shapes, each with 1, 2 and 4 processes:

* empty tasks: hutch ``WorkerPool`` processes (the pool's defaults: ``concurrency`` threads,
  ``prefetch`` per consumer) draining a filled queue, vs hand-written pika processes of the
  same shape (``concurrency`` threads per process, each with its own ``BlockingConnection``,
  ``basic_qos(prefetch)`` with hutch's prefetch, ``basic_ack`` after the task);
* 5 ms tasks: the same, with a handler that sleeps 5 ms (ideal: processes x concurrency / 5 ms);
* RPC: hutch ``RpcServer`` processes (defaults) vs pika server processes (one consumer,
  hutch's prefetch, reply then ack), driven by a pool of client processes keeping 50 calls
  in flight each (hutch ``RpcClient.call_async`` vs pika publishing to direct reply-to).

The queue is filled while the consumers wait at a gate, then the gate opens and the clock
runs until the last task is done, so the figure is consuming throughput, not publishing.
hutch and pika take turns in every round; each figure is the median of the rounds. The
share of all CPUs busy during each measurement (broker included) says where the machine,
not the client, is the ceiling.

    python benchmarks/scale_out.py [--url amqp://...] [--processes 1,2,4] [--rounds 3]
                                   [--smoke] [--chart docs/img/scale_out.svg]

Counts scale with ``$HUTCH_BENCH_SCALE`` (``--smoke``: tiny counts, 1 round).
``run(url)`` returns the figures for ``benchmarks/run_all.py``; ``draw_chart`` draws them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue as queue_mod
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hutch
import rpc as rpc_bench
from _common import CpuSampler, broker_url, is_smoke, load_average, scaled, set_smoke

CTX = multiprocessing.get_context("spawn")
KINDS = ("pika", "hutch")
TASK_MS = 5
GAIN_AT_CEILING = 1.15  # doubling the processes gains less than this: the ceiling is reached
BUSY_AT_CEILING = 0.90  # share of all CPUs busy that counts as the machine's ceiling
START_TIMEOUT = 60.0


def _noop(_body: object) -> None:
    pass


def hutch_shapes(url: str) -> dict[str, int]:
    """The defaults of hutch's WorkerPool and RpcServer, for pika's side to copy (no I/O)."""
    pool = hutch.WorkerPool(url, queue="shape-probe", handler=_noop)
    server = hutch.RpcServer(url, queue="shape-probe")
    return {
        "pool_concurrency": pool.concurrency,
        "pool_prefetch": pool.prefetch,
        "server_concurrency": server.concurrency,
        "server_prefetch": server.prefetch,
    }


# --------------------------------------------------------------------- worker processes
class _Shared:
    """What a group's processes and the parent share: gate, counter, target, end time."""

    def __init__(self) -> None:
        self.gate = CTX.Event()
        self.stop = CTX.Event()
        self.done = CTX.Event()
        self.counter = CTX.Value("q", 0)
        self.target = CTX.Value("q", 0, lock=False)
        self.end = CTX.Value("d", 0.0, lock=False)
        self.reports: Any = CTX.Queue()

    def task(self, ms: int) -> None:
        """The work of one message: wait at the gate, sleep ``ms``, count it."""
        self.gate.wait()
        if ms:
            time.sleep(ms / 1000)
        with self.counter.get_lock():
            self.counter.value += 1
            if self.counter.value == self.target.value:
                self.end.value = time.monotonic()
                self.done.set()


def _worker_process(
    kind: str, url: str, queue: str, concurrency: int, prefetch: int, shared: _Shared
) -> None:
    try:
        if kind == "hutch":
            _hutch_worker(url, queue, shared)
        else:
            _pika_worker(url, queue, concurrency, prefetch, shared)
    except BaseException as exc:
        shared.reports.put(("error", f"{kind} worker {os.getpid()}: {exc!r}"))
        raise


def _hutch_worker(url: str, queue: str, shared: _Shared) -> None:
    with hutch.connect(url, connection_name="bench-scale-out-hutch") as conn:
        pool = hutch.WorkerPool(
            conn,
            queue=hutch.Queue(queue, durable=False),
            handler=shared.task,
            model=int,
            retry=None,
        )
        with pool:
            shared.reports.put(("ready", os.getpid()))
            shared.stop.wait()


def _pika_worker(url: str, queue: str, concurrency: int, prefetch: int, shared: _Shared) -> None:
    """``concurrency`` consumer threads, one BlockingConnection each (pika's thread rules)."""
    ready = threading.Barrier(concurrency + 1)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(url))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=prefetch)

            def on_message(c: Any, method: Any, _props: Any, body: bytes) -> None:
                shared.task(int(body))
                c.basic_ack(method.delivery_tag)

            ch.basic_consume(queue, on_message)
        except BaseException as exc:
            errors.append(exc)
            ready.abort()
            raise
        ready.wait()
        while not shared.stop.is_set():
            conn.process_data_events(time_limit=0.1)
        conn.close()

    threads = [threading.Thread(target=consume, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    try:
        ready.wait(START_TIMEOUT)
    except threading.BrokenBarrierError:
        raise RuntimeError(f"pika consumers failed to start: {errors!r}") from None
    shared.reports.put(("ready", os.getpid()))
    for t in threads:
        t.join()


def _wait_ready(reports: Any, processes: list[Any], count: int, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    ready = 0
    while ready < count:
        try:
            status, detail = reports.get(timeout=0.5)
        except queue_mod.Empty:
            if any(p.exitcode is not None for p in processes):
                raise RuntimeError(f"a {what} process exited before it was ready") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} processes not ready in {START_TIMEOUT} s") from None
            continue
        if status != "ready":
            raise RuntimeError(str(detail))
        ready += 1


def _stop_processes(processes: list[Any]) -> None:
    for p in processes:
        p.join(20)
    for p in processes:
        if p.exitcode is None:
            p.kill()
            p.join(5)


class WorkerGroup:
    """``processes`` worker processes of one kind consuming one queue."""

    def __init__(self, kind: str, url: str, processes: int, shapes: dict[str, int]) -> None:
        self.kind, self.url = kind, url
        self.queue = f"bench-scale-{kind}-{uuid.uuid4().hex[:8]}"
        with hutch.connect(url, connection_name="bench-scale-out-setup") as conn:
            conn.channel().declare([hutch.Queue(self.queue, durable=False)])
        self.shared = _Shared()
        self.processes = [
            CTX.Process(
                target=_worker_process,
                args=(
                    kind,
                    url,
                    self.queue,
                    shapes["pool_concurrency"],
                    shapes["pool_prefetch"],
                    self.shared,
                ),
                name=f"bench-{kind}-worker-{i}",
                daemon=True,
            )
            for i in range(processes)
        ]
        for p in self.processes:
            p.start()

    def wait_ready(self) -> None:
        _wait_ready(self.shared.reports, self.processes, len(self.processes), self.kind)

    def measure(self, tasks: int, ms: int, timeout: float) -> tuple[float, float | None]:
        """Fill the queue with ``tasks`` tasks of ``ms``, open the gate; (tasks/s, CPU busy)."""
        shared = self.shared
        shared.gate.clear()
        shared.done.clear()
        with shared.counter.get_lock():
            shared.counter.value = 0
        shared.target.value = tasks
        with (
            hutch.connect(self.url, connection_name="bench-scale-out-fill") as conn,
            hutch.Publisher(conn, routing_key=self.queue, model=int) as pub,
        ):
            for lo in range(0, tasks, 1000):
                pub.publish_many([ms] * min(1000, tasks - lo)).raise_for_failures()
        cpu = CpuSampler()
        cpu.start()
        started = time.monotonic()
        shared.gate.set()
        if not shared.done.wait(timeout):
            raise RuntimeError(
                f"{self.kind}: {shared.counter.value} of {tasks} tasks done in {timeout} s"
            )
        busy = cpu.stop()
        shared.gate.clear()
        return tasks / (shared.end.value - started), busy

    def close(self) -> None:
        self.shared.stop.set()
        self.shared.gate.set()
        _stop_processes(self.processes)
        with hutch.connect(self.url, connection_name="bench-scale-out-cleanup") as conn:
            ch = conn.channel()
            for name in (self.queue, f"{self.queue}.dead"):
                ch.delete_queue(name)


# --------------------------------------------------------------------- RPC processes
def _rpc_server_process(kind: str, url: str, queue: str, prefetch: int, shared: _Shared) -> None:
    try:
        if kind == "hutch":
            server = hutch.RpcServer(url, queue=queue)

            @server.procedure
            def add(x: int, y: int) -> int:
                return x + y

            server.start()
            shared.reports.put(("ready", os.getpid()))
            shared.stop.wait()
            server.close()
            return
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=prefetch)

        def on_request(c: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
            result = json.dumps(sum(json.loads(body)["args"])).encode()
            c.basic_publish(
                "",
                props.reply_to,
                result,
                pika.BasicProperties(
                    correlation_id=props.correlation_id, content_type="application/json"
                ),
            )
            c.basic_ack(method.delivery_tag)

        ch.basic_consume(queue, on_request)
        shared.reports.put(("ready", os.getpid()))
        while not shared.stop.is_set():
            conn.process_data_events(time_limit=0.1)
        conn.close()
    except BaseException as exc:
        shared.reports.put(("error", f"{kind} RPC server {os.getpid()}: {exc!r}"))
        raise


def _rpc_client_process(kind: str, url: str, queue: str, commands: Any, results: Any) -> None:
    try:
        client = rpc_bench.CLIENTS[kind](url, queue)
        for i in range(20):
            if client.call(i) != i + 1:
                raise RuntimeError("wrong reply")
        results.put(("ready", os.getpid()))
        while True:
            command = commands.get()
            if command is None:
                break
            calls, in_flight = command
            client.flight(calls, in_flight)
            results.put(("done", time.monotonic()))
        client.close()
    except BaseException as exc:
        results.put(("error", f"{kind} RPC client {os.getpid()}: {exc!r}"))
        raise


class RpcClients:
    """A pool of client processes of one kind, kept for the whole run (idle between runs)."""

    def __init__(self, kind: str, url: str, queue: str, clients: int) -> None:
        self.kind = kind
        self.results: Any = CTX.Queue()
        self.commands: list[Any] = [CTX.Queue() for _ in range(clients)]
        self.processes = [
            CTX.Process(
                target=_rpc_client_process,
                args=(kind, url, queue, commands, self.results),
                name=f"bench-{kind}-rpc-client-{i}",
                daemon=True,
            )
            for i, commands in enumerate(self.commands)
        ]
        for p in self.processes:
            p.start()

    def wait_ready(self) -> None:
        _wait_ready(self.results, self.processes, len(self.processes), f"{self.kind} RPC client")

    def measure(self, calls: int, in_flight: int, timeout: float) -> tuple[float, float | None]:
        each = max(1, calls // len(self.commands))
        cpu = CpuSampler()
        cpu.start()
        started = time.monotonic()
        for commands in self.commands:
            commands.put((each, in_flight))
        ends = []
        for _ in self.commands:
            status, detail = self.results.get(timeout=timeout)
            if status != "done":
                raise RuntimeError(str(detail))
            ends.append(float(detail))
        busy = cpu.stop()
        return each * len(self.commands) / (max(ends) - started), busy

    def close(self) -> None:
        for commands in self.commands:
            commands.put(None)
        _stop_processes(self.processes)


class ServerGroup:
    def __init__(self, kind: str, url: str, queue: str, processes: int, prefetch: int) -> None:
        self.kind = kind
        self.shared = _Shared()
        self.processes = [
            CTX.Process(
                target=_rpc_server_process,
                args=(kind, url, queue, prefetch, self.shared),
                name=f"bench-{kind}-rpc-server-{i}",
                daemon=True,
            )
            for i in range(processes)
        ]
        for p in self.processes:
            p.start()

    def wait_ready(self) -> None:
        _wait_ready(self.shared.reports, self.processes, len(self.processes), f"{self.kind} RPC")

    def close(self) -> None:
        self.shared.stop.set()
        _stop_processes(self.processes)


# --------------------------------------------------------------------- the run
def _ceiling(counts: list[int], rates: list[float], busy: list[float | None]) -> str:
    """Where adding processes stops paying, and whether the machine's CPUs are the reason."""
    if len(counts) == 1:
        return f"only {counts[0]} process{'es' if counts[0] > 1 else ''} measured"
    for i in range(1, len(counts)):
        if rates[i] < rates[i - 1] * GAIN_AT_CEILING:
            cpu = busy[i]
            why = (
                f"all {os.cpu_count()} CPUs {cpu:.0%} busy: the machine's ceiling"
                if cpu is not None and cpu >= BUSY_AT_CEILING
                else f"CPUs {cpu:.0%} busy, short of the machine's ceiling: the broker's (one "
                "queue is served by one broker process)"
                if cpu is not None
                else "CPU share unknown"
            )
            plural = "es" if counts[i - 1] > 1 else ""
            return (
                f"ceiling at {counts[i - 1]} process{plural} ({rates[i - 1]:,.0f}/s): "
                f"{counts[i]} processes gain {rates[i] / rates[i - 1] - 1:+.0%}; {why}"
            )
    return (
        f"no ceiling up to {counts[-1]} processes (each step gained >= {GAIN_AT_CEILING - 1:.0%})"
    )


def run(
    url: str,
    *,
    processes: tuple[int, ...] | None = None,
    rounds: int | None = None,
    empty_tasks: int | None = None,
    slow_tasks: int | None = None,
    rpc_calls: int | None = None,
    rpc_clients: int = 2,
    in_flight: int = 50,
) -> dict[str, Any]:
    """Measure every shape at every process count; return rows, series and ceilings."""
    smoke = is_smoke()
    counts = sorted(set(processes or ((1, 2) if smoke else (1, 2, 4))))
    rounds = rounds or (1 if smoke else 3)
    empty_tasks = empty_tasks or scaled(20_000, 100)
    slow_tasks = slow_tasks or scaled(4_000, 40)
    rpc_calls = rpc_calls or scaled(10_000, 100)
    shapes = hutch_shapes(url)
    shape_names = {
        "empty": "empty tasks",
        "slow": f"{TASK_MS} ms tasks",
        "rpc": f"RPC calls ({rpc_clients} clients x {in_flight} in flight)",
    }
    figures: dict[str, dict[str, dict[int, list[float]]]] = {
        s: {k: {n: [] for n in counts} for k in KINDS} for s in shape_names
    }
    busy: dict[str, dict[str, dict[int, list[float]]]] = {
        s: {k: {n: [] for n in counts} for k in KINDS} for s in shape_names
    }

    def record(shape: str, kind: str, n: int, measured: tuple[float, float | None]) -> None:
        figures[shape][kind][n].append(measured[0])
        if measured[1] is not None:
            busy[shape][kind][n].append(measured[1])
        cpu = f", CPUs {measured[1]:.0%} busy" if measured[1] is not None else ""
        print(
            f"  {shape_names[shape]:<16.16} {kind:>5} x{n}: {measured[0]:>9,.0f}/s{cpu}", flush=True
        )

    # work queues: both kinds' groups for one process count are started together (idle
    # consumers cost nothing), then they take turns
    for n in counts:
        groups = {k: WorkerGroup(k, url, n, shapes) for k in KINDS}
        try:
            for group in groups.values():
                group.wait_ready()
            for _ in range(rounds):
                for kind, group in groups.items():
                    record("empty", kind, n, group.measure(empty_tasks, 0, 600))
                for kind, group in groups.items():
                    record("slow", kind, n, group.measure(slow_tasks, TASK_MS, 600))
        finally:
            for group in groups.values():
                group.close()

    # RPC: one request queue and one client pool per kind for the whole run; the servers
    # change with the process count
    rpc_queues = {k: f"bench-scale-rpc-{k}-{uuid.uuid4().hex[:8]}" for k in KINDS}
    with hutch.connect(url, connection_name="bench-scale-out-setup") as conn:
        conn.channel().declare([hutch.Queue(q, durable=False) for q in rpc_queues.values()])
    pools: dict[str, RpcClients] = {}
    try:
        for n in counts:
            servers = {
                k: ServerGroup(k, url, rpc_queues[k], n, shapes["server_prefetch"]) for k in KINDS
            }
            try:
                for server in servers.values():
                    server.wait_ready()
                if not pools:  # the clients warm up against the first servers
                    pools = {k: RpcClients(k, url, rpc_queues[k], rpc_clients) for k in KINDS}
                    for pool in pools.values():
                        pool.wait_ready()
                for _ in range(rounds):
                    for kind, pool in pools.items():
                        record("rpc", kind, n, pool.measure(rpc_calls, in_flight, 600))
            finally:
                for server in servers.values():
                    server.close()
    finally:
        for pool in pools.values():
            pool.close()
        with hutch.connect(url, connection_name="bench-scale-out-cleanup") as conn:
            ch = conn.channel()
            for q in rpc_queues.values():
                ch.delete_queue(q)

    series: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    ceilings: dict[str, str] = {}
    for shape, label in shape_names.items():
        series[shape] = {"label": label, "processes": counts}
        for kind in KINDS:
            rates = [statistics.median(figures[shape][kind][n]) for n in counts]
            cpu = [
                statistics.median(busy[shape][kind][n]) if busy[shape][kind][n] else None
                for n in counts
            ]
            series[shape][kind] = rates
            series[shape][f"{kind}_cpu_busy"] = cpu
            ceilings[f"{label}, {kind}"] = _ceiling(counts, rates, cpu)
        if shape == "slow":
            ideal = [n * shapes["pool_concurrency"] * 1000 / TASK_MS for n in counts]
            series[shape]["ideal"] = ideal
        unit = "calls/s" if shape == "rpc" else "tasks/s"
        for i, n in enumerate(counts):
            hutch_rate, pika_rate = series[shape]["hutch"][i], series[shape]["pika"][i]
            rows.append(
                {
                    "name": f"{label}, {n} process{'es' if n > 1 else ''}",
                    "hutch": hutch_rate,
                    "baseline": pika_rate,
                    "baseline_name": "hand-written pika, same shape",
                    "ratio": hutch_rate / pika_rate,
                    "unit": unit,
                    "target": None,
                }
            )
    notes = [f"{name}: {text}." for name, text in ceilings.items()] + [
        f"Measured with {load_average()}; the broker, the workers and the clients share the "
        "machine, so 'the machine's ceiling' is where all CPUs are busy."
    ]
    return {
        "title": "Scale-out: worker and RPC server processes on one queue",
        "rows": rows,
        "notes": notes,
        "series": series,
        "ceilings": ceilings,
        "shapes": shapes,
        "params": {
            "processes": counts,
            "rounds": rounds,
            "empty_tasks": empty_tasks,
            "slow_tasks": slow_tasks,
            "task_ms": TASK_MS,
            "rpc_calls": rpc_calls,
            "rpc_clients": rpc_clients,
            "in_flight": in_flight,
            "cpus": os.cpu_count(),
            "load": load_average(),
        },
    }


def print_report(result: dict[str, Any]) -> None:
    params = result["params"]
    print(
        f"\n{result['title']}: median of {params['rounds']} rounds; "
        f"{params['empty_tasks']} empty tasks, {params['slow_tasks']} x {params['task_ms']} ms "
        f"tasks, {params['rpc_calls']} RPC calls per measurement; {params['load']}"
    )
    print(f"hutch's shapes (pika copies them): {result['shapes']}")
    print(f"{'shape':<46} {'hutch':>10} {'pika':>10} {'ratio':>6} {'CPUs busy':>10}")
    for data in result["series"].values():
        for i, n in enumerate(data["processes"]):
            h, p = data["hutch"][i], data["pika"][i]
            cpu = data["hutch_cpu_busy"][i]
            cpu_text = f"{cpu:.0%}" if cpu is not None else "-"
            extra = f"  ideal {data['ideal'][i]:,.0f}/s" if "ideal" in data else ""
            print(
                f"{data['label'] + f', {n} proc':<46.46} {h:>10,.0f} {p:>10,.0f} {h / p:>6.2f} {cpu_text:>10}{extra}"
            )
    print("\nwhere the ceiling is:")
    for name, text in result["ceilings"].items():
        print(f"  {name}: {text}")


def draw_chart(result: dict[str, Any], path: Path) -> bool:
    """Throughput against process count, one panel per shape; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no scale-out chart", file=sys.stderr)
        return False
    series = result.get("series")
    if not isinstance(series, dict) or not series:
        return False
    plt.rcParams["svg.hashsalt"] = "hutch"  # stable ids: the SVG only changes with the data
    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.6))
    styles: dict[str, dict[str, Any]] = {
        "hutch": {"color": "#2e7d32", "marker": "o", "label": "hutch"},
        "pika": {
            "color": "#546e7a",
            "marker": "s",
            "linestyle": "--",
            "label": "hand-written pika",
        },
    }
    for ax, data in zip(list(axes) if len(series) > 1 else [axes], series.values(), strict=True):
        counts = data["processes"]
        for kind, style in styles.items():
            ax.plot(counts, data[kind], **style)
        if "ideal" in data:
            ax.plot(counts, data["ideal"], color="#9e9e9e", linestyle=":", label="ideal")
        ax.set_title(data["label"], fontsize=9)
        ax.set_xlabel("processes")
        ax.set_xticks(counts)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    first = next(iter(axes)) if len(series) > 1 else axes
    first.set_ylabel("per second (all processes)")
    first.legend(fontsize=8)
    cpus = result.get("params", {}).get("cpus", "?")
    fig.suptitle(f"Throughput by process count, same broker, same run ({cpus} CPUs)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix.lstrip(".") or "svg", metadata={"Date": None})
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--url", help="broker URL (default: $HUTCH_URL, else a throwaway local node)")
    p.add_argument("--processes", default=None, help="process counts, e.g. 1,2,4")
    p.add_argument("--rounds", type=int, default=None, help="median of this many (default 3)")
    p.add_argument("--rpc-clients", type=int, default=2)
    p.add_argument("--in-flight", type=int, default=50)
    p.add_argument("--smoke", action="store_true", help="tiny counts, 1 round: does it work?")
    p.add_argument("--chart", type=Path, help="also draw the chart to this file (matplotlib)")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = p.parse_args(argv)
    if args.smoke:
        set_smoke()
    counts = tuple(int(c) for c in args.processes.split(",")) if args.processes else None
    if counts is not None and (not counts or min(counts) < 1):
        p.error("--processes takes positive counts, e.g. 1,2,4")
    with broker_url(args.url) as url:
        result = run(
            url,
            processes=counts,
            rounds=args.rounds,
            rpc_clients=args.rpc_clients,
            in_flight=args.in_flight,
        )
    print_report(result)
    if args.chart is not None and draw_chart(result, args.chart):
        print(f"wrote {args.chart}")
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
