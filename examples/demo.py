"""The hutch demo: every pattern, end to end, against a real broker.

    python -m pip install nox && nox -s demo        # the README's first command
    python examples/demo.py [AMQP_URL]              # with hutch[testing,cli] installed

The broker is the one at AMQP_URL or ``$HUTCH_URL``; without either, a throwaway broker is
started for the demo and removed afterwards (``hutch.testing.throwaway_broker``: a Docker
container, or a private local ``rabbitmq-server`` node, installed with apt-get when missing
and running as root on Debian).

Sections: broadcast; routing by direct, topic and headers exchanges; a work queue with fair
dispatch (400 tasks of varying length over 8 workers, against round-robin); RPC through a
typed stub; retries and dead letters. Then a summary. Every entity it declares has a name
unique to the run and is deleted at the end.

``HUTCH_DEMO_TASKS`` sets the work queue's number of tasks (default 400, at least 8); the
test suite runs the demo with fewer.
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel

import hutch

try:
    from rich import box
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
except ImportError:  # pragma: no cover - the nox session installs hutch[cli]
    sys.exit("the demo needs rich: python -m pip install 'hutch[cli]' (or run: nox -s demo)")

console = Console(highlight=False)
T = TypeVar("T")
RUN = uuid.uuid4().hex[:6]
PREFIX = f"demo-{RUN}."
#: Durable queues the demo declared, deleted at the end.
CREATED: list[str] = []


@dataclass
class Outcome:
    """What a section showed, for the summary."""

    section: str
    shown: str
    ok: bool
    seconds: float = 0.0


def section(title: str, text: str) -> None:
    console.print()
    console.rule(f"[bold]{title}")
    console.print(text, style="dim")


def check(ok: bool) -> str:
    return "[green]✓[/]" if ok else "[red]✗[/]"


def received(sub: hutch.Subscriber[T], until: float) -> list[hutch.Message[T]]:
    """What ``sub`` receives until ``until`` (a ``time.monotonic()``) and none comes for 0.05 s.

    The publishes were confirmed, so every message is already queued and on its way to its
    subscriber: reading the subscribers one after another against one deadline waits the
    window once, not once per subscriber.
    """
    return list(sub.messages(timeout=max(until - time.monotonic(), 0.05)))


# --------------------------------------------------------------------------- broadcast


class Version(BaseModel):
    service: str
    version: str


def broadcast(conn: hutch.Connection) -> Outcome:
    section(
        "1. Broadcast",
        "A fanout exchange copies every message to every bound queue. Each subscriber binds "
        "its own anonymous queue (server-named, exclusive), so each receives every version.",
    )
    versions = hutch.Exchange(PREFIX + "ff.version.b", type="fanout", auto_delete=True)
    releases = [
        Version(service="api", version="2.4.0"),
        Version(service="web", version="1.9.2"),
        Version(service="billing", version="0.7.1"),
        Version(service="api", version="2.4.1"),
    ]
    names = ["dashboard", "deployer", "auditor"]
    subs = {n: hutch.Subscriber(conn, exchange=versions, model=Version).open() for n in names}
    with hutch.Publisher(conn, exchange=versions, model=Version) as pub:
        for release in releases:
            pub.publish(release)
    table = Table("subscriber", "its queue", "received", box=box.SIMPLE_HEAD)
    ok = True
    until = time.monotonic() + 0.3
    for name, sub in subs.items():
        got = [f"{m.body.service} {m.body.version}" for m in received(sub, until)]
        ok &= len(got) == len(releases)
        table.add_row(name, sub.queue_name[:16] + "…", ", ".join(got))
        sub.close()
    console.print(f"published {len(releases)} versions to [bold]{versions.name}[/]")
    console.print(table)
    return Outcome("Broadcast", f"{len(releases)} messages to {len(names)} subscribers", ok)


# --------------------------------------------------------------------------- routing


def routing(conn: hutch.Connection) -> Outcome:
    section(
        "2. Routing",
        "direct: the routing key equals a binding key. topic: '*' is one word, '#' zero or "
        "more. headers: all (or any) of the binding's headers match the message's.",
    )
    # (exchange, its subscribers by binding, what each should receive), for reading below
    runs: list[tuple[hutch.Exchange, dict[str, hutch.Subscriber[str]], dict[str, list[str]]]] = []

    def run(
        exchange: hutch.Exchange,
        bindings: dict[str, hutch.Subscriber[str]],
        messages: list[tuple[str, str, dict[str, str] | None]],
        expected: dict[str, list[str]],
    ) -> None:
        for sub in bindings.values():
            sub.open()
        with hutch.Publisher(conn, exchange=exchange, model=str) as pub:
            for body, key, headers in messages:
                pub.publish(body, routing_key=key, headers=headers)
        runs.append((exchange, bindings, expected))

    logs = hutch.Exchange(PREFIX + "logs", "direct", durable=False, auto_delete=True)
    run(
        logs,
        {
            "error": hutch.Subscriber(conn, exchange=logs, routing_keys="error", model=str),
            "info, warning, error": hutch.Subscriber(
                conn, exchange=logs, routing_keys=["info", "warning", "error"], model=str
            ),
        },
        [(level, level, None) for level in ["info", "warning", "error", "debug"]],
        {"error": ["error"], "info, warning, error": ["info", "warning", "error"]},
    )
    events = hutch.Exchange(PREFIX + "events", "topic", durable=False, auto_delete=True)
    keys = ["order", "order.created", "order.created.eu", "refund.created.eu"]
    run(
        events,
        {
            p: hutch.Subscriber(conn, exchange=events, routing_keys=p, model=str)
            for p in ["order.*", "order.#", "*.*.eu", "#.eu"]
        },
        [(k, k, None) for k in keys],
        {
            "order.*": ["order.created"],
            "order.#": ["order", "order.created", "order.created.eu"],
            "*.*.eu": ["order.created.eu", "refund.created.eu"],
            "#.eu": ["order.created.eu", "refund.created.eu"],
        },
    )
    reports = hutch.Exchange(PREFIX + "reports", "headers", durable=False, auto_delete=True)
    wanted = {"format": "pdf", "type": "report"}
    modes: list[Literal["all", "any"]] = ["all", "any"]
    run(
        reports,
        {
            f"format=pdf {m} type=report": hutch.Subscriber(
                conn, exchange=reports, headers=wanted, match=m, model=str
            )
            for m in modes
        },
        [
            (f"{f}-{t}", "", {"format": f, "type": t})
            for f, t in [("pdf", "report"), ("pdf", "log"), ("csv", "report"), ("csv", "log")]
        ],
        {
            "format=pdf all type=report": ["pdf-report"],
            "format=pdf any type=report": ["pdf-report", "pdf-log", "csv-report"],
        },
    )
    table = Table("exchange", "binding", "received", "", box=box.SIMPLE_HEAD)
    ok = True
    until = time.monotonic() + 0.3
    for exchange, bindings, expected in runs:
        for label, sub in bindings.items():
            got = [m.body for m in received(sub, until)]
            good = got == expected[label]
            ok &= good
            table.add_row(exchange.exchange_type.value, label, ", ".join(got) or "-", check(good))
            sub.close()
        table.add_section()
    console.print(table)
    return Outcome("Routing", "direct, topic (* and #), headers (all / any)", ok)


# --------------------------------------------------------------------------- work queue


class Task(BaseModel):
    number: int
    seconds: float


def task_lengths(n: int) -> list[float]:
    """Varying lengths, and every 8th task long: round-robin gives them all to one worker."""
    rng = random.Random(42)
    return [
        rng.uniform(0.040, 0.080) if i % 8 == 0 else rng.uniform(0.001, 0.008) for i in range(n)
    ]


@dataclass
class PoolRun:
    label: str
    makespan: float
    per_worker: list[tuple[int, float]]  # (tasks, busy seconds) per worker
    exactly_once: bool  # every task handled, none twice


def run_pool(
    conn: hutch.Connection,
    progress: Progress,
    label: str,
    prefetch: int,
    lengths: list[float],
    channels: int = 1,
) -> PoolRun:
    done = threading.Event()
    lock = threading.Lock()
    finished = 0
    starts: list[float] = []
    ends: list[float] = []

    seen: set[int] = set()

    def work(task: Task) -> None:
        nonlocal finished
        start = time.perf_counter()
        time.sleep(task.seconds)
        with lock:
            starts.append(start)
            ends.append(time.perf_counter())
            seen.add(task.number)
            finished += 1
            if finished == len(lengths):
                done.set()

    queue = hutch.Queue(PREFIX + f"tasks-prefetch-{prefetch}", expires=300)
    pool = hutch.WorkerPool(
        conn,
        queue=queue,
        handler=work,
        model=Task,
        concurrency=8,
        prefetch=prefetch,
        channels=channels,
    )
    bar = progress.add_task(label, total=len(lengths))
    with pool:
        pool.start()
        result = pool.submit_many(Task(number=i, seconds=s) for i, s in enumerate(lengths))
        result.raise_for_failures()
        while not done.wait(0.05):
            progress.update(bar, completed=finished)
        progress.update(bar, completed=finished)
        # the last handler has returned; give the pool a moment to count its ack
        deadline = time.monotonic() + 5
        while pool.stats.processed < len(lengths) and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = pool.stats
        CREATED.extend([queue.name, pool.dead_letter_queue.name, *pool.delay_queues])
    per_worker = [(w.processed, w.busy_seconds) for w in stats.workers]
    exactly_once = finished == len(lengths) == len(seen) == stats.processed
    return PoolRun(label, max(ends) - min(starts), per_worker, exactly_once)


def demo_tasks() -> int:
    """The work queue's number of tasks: ``$HUTCH_DEMO_TASKS``, 400 by default."""
    value = os.environ.get("HUTCH_DEMO_TASKS", "400")
    if not value.isdigit() or int(value) < 8:
        sys.exit(f"HUTCH_DEMO_TASKS must be a whole number of at least 8, not {value!r}")
    return int(value)


def work_queue(conn: hutch.Connection) -> Outcome:
    lengths = task_lengths(demo_tasks())
    ideal = max(sum(lengths) / 8, max(lengths))
    section(
        "3. Work queue with fair dispatch",
        f"{len(lengths)} tasks of 1-80 ms ({sum(lengths):.1f} s of work; every 8th task long) "
        "over 8 workers. With a consumer per worker and a large prefetch, as hand-written "
        "consumers often are, the broker deals tasks out round-robin, so one worker gets every "
        "long task; hutch's pool holds a small window (prefetch 1 per worker + 2) in one "
        "inbox that whichever worker frees first takes from. "
        f"Ideal: {ideal:.2f} s.",
    )
    progress = Progress(
        TextColumn("{task.description:<30}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        rr = run_pool(conn, progress, "round-robin (prefetch 50 each)", 50, lengths, channels=8)
        fair = run_pool(conn, progress, "fair dispatch (window)", 1, lengths)
    table = Table(
        "worker",
        "round-robin tasks",
        "busy",
        "fair tasks",
        "busy",
        box=box.SIMPLE_HEAD,
    )
    for i, ((rr_n, rr_busy), (f_n, f_busy)) in enumerate(
        zip(rr.per_worker, fair.per_worker, strict=True)
    ):
        table.add_row(str(i), str(rr_n), f"{rr_busy:.2f} s", str(f_n), f"{f_busy:.2f} s")

    def spread(run: PoolRun) -> str:
        busy = [b for _, b in run.per_worker]
        return f"{min(busy):.2f}-{max(busy):.2f} s"

    def stdev(run: PoolRun) -> str:
        return f"{statistics.pstdev([b for _, b in run.per_worker]):.2f} s"

    table.add_section()
    table.add_row("busy: range", "", spread(rr), "", spread(fair))
    table.add_row("busy: std dev", "", stdev(rr), "", stdev(fair))
    table.add_row("all done in", "", f"{rr.makespan:.2f} s", "", f"{fair.makespan:.2f} s")
    console.print(table)
    counted = rr.exactly_once and fair.exactly_once
    ok = counted and fair.makespan < rr.makespan
    console.print(
        f"fair dispatch finished in {fair.makespan:.2f} s ({fair.makespan / ideal:.2f}x the "
        f"ideal), round-robin in {rr.makespan:.2f} s; every task handled exactly once: "
        f"{check(counted)}"
    )
    return Outcome(
        "Work queue",
        f"{len(lengths)} tasks, 8 workers: {fair.makespan:.2f} s fair vs "
        f"{rr.makespan:.2f} s round-robin",
        ok,
    )


# --------------------------------------------------------------------------- RPC


class Point(BaseModel):
    x: float
    y: float


class Geometry(Protocol):
    """The contract between server and clients: typed arguments, typed results."""

    def add_point(self, x: float, y: float) -> Point: ...

    def distance(self, a: Point, b: Point) -> float: ...

    def divide(self, a: float, b: float) -> float: ...


class GeometryService:
    def add_point(self, x: float, y: float) -> Point:
        return Point(x=x, y=y)

    def distance(self, a: Point, b: Point) -> float:
        return float(((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5)

    def divide(self, a: float, b: float) -> float:
        return a / b


def rpc(conn: hutch.Connection) -> Outcome:
    section(
        "4. RPC with a typed stub",
        "The server implements the Geometry protocol; the client calls it through "
        "client.stub(Geometry), so mypy checks the calls and results come back typed. "
        "Remote exceptions come back as RemoteError; a call to a queue nobody serves fails at "
        "once with NoServer.",
    )
    queue = hutch.Queue(PREFIX + "geometry", durable=False, auto_delete=True)
    server = hutch.RpcServer(conn, queue=queue, concurrency=4)
    server.implement(Geometry, GeometryService())
    table = Table("call", "result", "", box=box.SIMPLE_HEAD)
    ok = True
    with server, hutch.RpcClient(conn, queue=queue.name, timeout=5) as client:
        geometry = client.stub(Geometry)
        a = geometry.add_point(3, 4)
        ok &= isinstance(a, Point) and a == Point(x=3, y=4)
        table.add_row("geometry.add_point(3, 4)", f"{a!r}", check(isinstance(a, Point)))
        d = geometry.distance(Point(x=0, y=0), a)
        ok &= d == 5.0
        table.add_row("geometry.distance(origin, that point)", f"{d!r}", check(d == 5.0))
        try:
            geometry.divide(1, 0)
            ok = False
        except hutch.RemoteError as exc:
            table.add_row(
                "geometry.divide(1, 0)",
                f"RemoteError: {exc.type_name}: {exc.remote_message}",
                check(exc.type_name == "ZeroDivisionError"),
            )
        started = time.perf_counter()
        futures = [client.call_async("add_point", i, i) for i in range(500)]
        results = [f.result(10) for f in futures]
        elapsed = time.perf_counter() - started
        ok &= len(results) == 500
        table.add_row(
            "500 calls in flight (call_async)",
            f"{len(results)} replies in {elapsed:.2f} s ({len(results) / elapsed:,.0f} calls/s)",
            check(len(results) == 500),
        )
    with hutch.RpcClient(conn, queue=PREFIX + "nobody-serves-this", timeout=5) as lonely:
        try:
            lonely.call("anything")
            ok = False
        except hutch.NoServer:
            table.add_row("a call to a queue nobody serves", "NoServer, at once", check(True))
    console.print(table)
    return Outcome("RPC", "typed stub, RemoteError, NoServer, 500 concurrent calls", ok)


# --------------------------------------------------------------------------- retries


class Order(BaseModel):
    id: int
    kind: Literal["ok", "flaky", "poison", "refused"]


def retries(conn: hutch.Connection) -> Outcome:
    policy = hutch.RetryPolicy(max_attempts=3, backoff=0.2, multiplier=2)
    section(
        "5. Retries and dead letters",
        f"A handler that raises is retried after {', '.join(f'{d:g}' for d in policy.delays())} s "
        f"through broker-side delay queues (a waiting retry occupies no worker); after "
        f"{policy.max_attempts} attempts, or at once for a body that does not validate or a "
        "Reject, the message goes to the dead-letter queue with the reason in its headers.",
    )
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    def handle(order: Order) -> None:
        with lock:
            attempts[order.id] = attempts.get(order.id, 0) + 1
            tries = attempts[order.id]
        if order.kind == "flaky" and tries < 3:
            raise ConnectionError(f"inventory service unreachable (attempt {tries})")
        if order.kind == "poison":
            raise ValueError(f"order {order.id} references a deleted customer")
        if order.kind == "refused":
            raise hutch.Reject("orders of this kind are refused")

    queue = hutch.Queue(PREFIX + "orders", expires=300)
    dead = hutch.Queue(PREFIX + "orders.dead", expires=300)
    orders = (
        [Order(id=i, kind="ok") for i in range(1, 11)]
        + [Order(id=i, kind="flaky") for i in range(11, 14)]
        + [Order(id=i, kind="poison") for i in range(14, 16)]
        + [Order(id=16, kind="refused")]
    )
    pool = hutch.WorkerPool(
        conn,
        queue=queue,
        handler=handle,
        model=Order,
        concurrency=4,
        retry=policy,
        dead_letter_queue=dead,
    )
    expected_dead = 2 + 1 + 1  # poison, refused, and one body that does not validate
    with pool:
        pool.start()
        pool.submit_many(orders).raise_for_failures()
        with hutch.Publisher(conn, routing_key=queue.name) as raw:
            raw.publish(b'{"id": "seventeen", "kind": "ok"}', content_type="application/json")
        # polled on the connection's clock: real time on RabbitMQ; on a memory broker's
        # virtual time (tests) the retries' 0.2 and 0.4 s pauses then pass at once
        clock = conn.clock
        deadline = clock.now() + 20
        while clock.now() < deadline:
            stats = pool.stats
            if stats.processed == 13 and stats.dead_lettered == expected_dead:
                break
            clock.sleep(0.05)
        stats = pool.stats
    table = Table(
        "dead letter", "x-hutch-error-type", "attempts", "x-hutch-error", box=box.SIMPLE_HEAD
    )
    dead_count = 0
    with hutch.Subscriber(conn, queue=dead) as inspect:
        for message in inspect.messages(timeout=0.5):
            dead_count += 1
            h = message.headers
            table.add_row(
                message.raw_body.decode(errors="replace"),
                str(h.get("x-hutch-error-type")),
                str(h.get("x-hutch-attempts", "-")),
                str(h.get("x-hutch-error")),
            )
    sent = len(orders) + 1
    console.print(
        f"sent {sent}: {stats.processed} processed (3 of them after retries), "
        f"{stats.retried} retries, {stats.dead_lettered} dead-lettered, "
        f"lost {sent - stats.processed - dead_count}"
    )
    console.print(table)
    ok = stats.processed == 13 and dead_count == expected_dead
    ok &= all(attempts[i] == 3 for i in range(11, 14))
    return Outcome(
        "Retries and dead letters",
        f"{sent} sent: {stats.processed} done, {stats.retried} retries, {dead_count} dead letters",
        ok,
    )


# --------------------------------------------------------------------------- main


@contextmanager
def broker(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from hutch.testing import BrokerError, throwaway_broker

    started = time.monotonic()
    with console.status("starting a throwaway RabbitMQ broker..."):
        try:
            context = throwaway_broker()
            found = context.__enter__()
        except BrokerError as exc:
            console.print(f"[red]no broker for the demo:[/] {exc}")
            raise SystemExit(1) from None
    console.print(f"broker ready in {time.monotonic() - started:.1f} s")
    try:
        yield found
    finally:
        context.__exit__(None, None, None)


def cleanup(conn: hutch.Connection) -> None:
    ch = conn.channel()
    try:
        for name in dict.fromkeys(CREATED):
            try:
                ch.delete_queue(name)
            except hutch.HutchError:
                pass
    finally:
        ch.close()


def main(url: str | None) -> int:
    # the dead letters are shown in a table: keep hutch's warnings about them off the screen
    logging.getLogger("hutch").setLevel(logging.ERROR)
    demo_tasks()  # a bad $HUTCH_DEMO_TASKS fails here, before anything runs
    console.print("[bold]hutch demo[/]: every pattern, end to end, against a real broker")
    sections: list[Callable[[hutch.Connection], Outcome]] = [
        broadcast,
        routing,
        work_queue,
        rpc,
        retries,
    ]
    outcomes: list[Outcome] = []
    started = time.monotonic()
    with broker(url) as found, hutch.connect(found, connection_name="hutch-demo") as conn:
        console.print(f"connected: {conn!r}")
        try:
            for run in sections:
                t0 = time.monotonic()
                try:
                    outcome = run(conn)
                except hutch.HutchError as exc:
                    name = run.__name__.replace("_", " ")
                    console.print(f"[red]{name} failed:[/] {type(exc).__name__}: {exc}")
                    outcome = Outcome(name, f"{type(exc).__name__}: {exc}", False)
                outcome.seconds = time.monotonic() - t0
                outcomes.append(outcome)
        finally:
            cleanup(conn)
    console.print()
    summary = Table("pattern", "what ran", "", "time", title="Summary", box=box.ROUNDED)
    for o in outcomes:
        summary.add_row(o.section, o.shown, check(o.ok), f"{o.seconds:.1f} s")
    console.print(summary)
    all_ok = all(o.ok for o in outcomes)
    verdict = "[green]all patterns worked[/]" if all_ok else "[red]some patterns failed[/]"
    console.print(f"{verdict} in {time.monotonic() - started:.1f} s")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HUTCH_URL")))
