"""``hutch worker``: run a handler for every message of a work queue on a pool of workers."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from hutch._cli.common import (
    EXIT_OK,
    AddCommand,
    connect,
    load_spec,
    positive_int,
    run_until_signalled,
    running,
    status,
)
from hutch._cli.metrics import add_metrics_options, serving
from hutch._loading import load_callable

__all__ = ["library_defaults", "register", "run"]


def library_defaults() -> dict[str, Any]:
    """The defaults of ``WorkerPool`` and ``RetryPolicy`` the options share (one source)."""
    from hutch._retry import RetryPolicy
    from hutch._worker_pool import WorkerPool

    params = inspect.signature(WorkerPool.__init__).parameters
    return {
        "concurrency": params["concurrency"].default,
        "prefetch": params["prefetch"].default,
        "max_attempts": RetryPolicy().max_attempts,
    }


def run(args: argparse.Namespace) -> int:
    """Run the pool until SIGTERM or Ctrl-C, then print its counts; the exit status."""
    from hutch._retry import RetryPolicy
    from hutch._worker_pool import WorkerPool

    handler = load_spec(
        args.handler, lambda spec: load_callable(spec, what="handler", from_cwd=True), "handler"
    )
    retry = RetryPolicy(max_attempts=args.max_attempts)
    with serving(args) as probe, connect(args, "worker") as conn:
        pool = WorkerPool(
            conn,
            queue=args.queue,
            handler=handler,
            concurrency=args.concurrency,
            processes=args.processes,
            prefetch=args.prefetch,
            retry=retry,
        )
        pool.start()
        probe.watch(
            lambda: {"connection_open": conn.is_connected, "consumers_active": pool.is_running}
        )
        running(args)
        mode = "processes" if args.processes else "threads"
        status(
            f"worker {args.handler} consuming queue {args.queue!r} with {args.concurrency} "
            f"{mode}, prefetch {args.prefetch}, up to {retry.max_attempts} attempts; "
            "Ctrl-C or SIGTERM stops it gracefully, a second Ctrl-C aborts"
        )
        run_until_signalled(pool.run, pool.stop, "the worker after the tasks in hand")
        stats = pool.stats
    status(
        f"worker stopped: {stats.processed} processed, {stats.retried} retried, "
        f"{stats.dead_lettered} dead-lettered, {stats.requeued} requeued"
    )
    return EXIT_OK


def register(command: AddCommand) -> None:
    """Add ``hutch worker`` and its options to the parser."""
    w = command(
        "worker",
        "process a work queue with a pool of workers",
        "Run HANDLER (package.module:function) for every message of a queue on a pool of "
        "threads (or processes), with fair dispatch. A task is acked when its handler "
        "returns; one that keeps failing goes to the dead-letter queue. SIGTERM or Ctrl-C "
        "stops taking tasks, finishes the ones in hand and exits 0; a second Ctrl-C aborts "
        "at once (exit 130; the broker redelivers the unfinished tasks). -v logs a line "
        "per task.",
        """
        hutch worker myapp.tasks:resize --queue images
        hutch worker myapp.tasks:resize --queue images --concurrency 8 --processes
        hutch worker myapp.tasks:send_mail --queue mail --prefetch 1 --max-attempts 5
        hutch worker myapp.tasks:resize --queue images --metrics-port 9102
        """,
    )
    w.add_argument("handler", metavar="HANDLER", help="package.module:function")
    w.add_argument("--queue", required=True, metavar="NAME", help="the work queue")
    defaults = library_defaults()
    w.add_argument(
        "-c",
        "--concurrency",
        type=positive_int,
        default=defaults["concurrency"],
        metavar="N",
        help="tasks run at once (default: %(default)s, as WorkerPool)",
    )
    w.add_argument(
        "--processes", action="store_true", help="run handlers in processes, not threads"
    )
    w.add_argument(
        "--prefetch",
        type=positive_int,
        default=defaults["prefetch"],
        metavar="N",
        help="unacked tasks per worker (default: %(default)s; 1 is the fairest dispatch)",
    )
    w.add_argument(
        "--max-attempts",
        type=positive_int,
        default=defaults["max_attempts"],
        metavar="N",
        help="attempts, the first included, before a task is dead-lettered "
        "(default: %(default)s, as RetryPolicy)",
    )
    add_metrics_options(w)
    w.set_defaults(run=run)
