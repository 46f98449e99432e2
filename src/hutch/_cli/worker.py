"""``hutch worker``: run a handler for every message of a work queue on a pool of workers."""

from __future__ import annotations

import argparse

from hutch._cli.common import (
    EXIT_OK,
    AddCommand,
    connect,
    load_spec,
    positive_int,
    running,
    status,
)
from hutch._loading import load_callable

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    """Run the pool until SIGTERM or Ctrl-C, then print its counts; the exit status."""
    from hutch._retry import RetryPolicy
    from hutch._worker_pool import WorkerPool

    handler = load_spec(
        args.handler, lambda spec: load_callable(spec, what="handler", from_cwd=True), "handler"
    )
    retry = (
        RetryPolicy() if args.max_attempts is None else RetryPolicy(max_attempts=args.max_attempts)
    )
    with connect(args, "worker") as conn:
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
        running(args)
        mode = "processes" if args.processes else "threads"
        status(
            f"worker {args.handler} consuming queue {args.queue!r} with {args.concurrency} "
            f"{mode}, prefetch {args.prefetch}, up to {retry.max_attempts} attempts; "
            "Ctrl-C or SIGTERM stops it gracefully"
        )
        # on the main thread, run() turns SIGTERM/SIGINT into a graceful stop by itself
        pool.run()
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
        "stops taking tasks, finishes the ones in hand and exits.",
        """
        hutch worker myapp.tasks:resize --queue images
        hutch worker myapp.tasks:resize --queue images --concurrency 8 --processes
        hutch worker myapp.tasks:send_mail --queue mail --prefetch 1 --max-attempts 5
        """,
    )
    w.add_argument("handler", metavar="HANDLER", help="package.module:function")
    w.add_argument("--queue", required=True, metavar="NAME", help="the work queue")
    w.add_argument(
        "-c",
        "--concurrency",
        type=positive_int,
        default=1,
        metavar="N",
        help="tasks run at once (default 1)",
    )
    w.add_argument(
        "--processes", action="store_true", help="run handlers in processes, not threads"
    )
    w.add_argument(
        "--prefetch",
        type=positive_int,
        default=1,
        metavar="N",
        help="unacked tasks per worker (default 1: fair dispatch)",
    )
    w.add_argument(
        "--max-attempts",
        type=positive_int,
        metavar="N",
        help="tries before a task is dead-lettered",
    )
    w.set_defaults(run=run)
