"""``hutch consume``: print the messages of a queue, or of a temporary queue bound to one."""

from __future__ import annotations

import argparse
import sys
import threading

from hutch._cli.common import (
    EXIT_OK,
    AddCommand,
    CommandFailed,
    UsageError,
    connect,
    positive_float,
    positive_int,
    running,
    status,
    stop_on_signals,
)
from hutch._cli.output import MessagePrinter, dumps, parse_pairs
from hutch._connection import Connection
from hutch._exceptions import NotFound
from hutch._subscriber import Subscriber

__all__ = ["register", "run"]


def _is_a_queue(conn: Connection, name: str) -> bool:
    """Whether a queue of this name exists (a passive declare on a channel of its own)."""
    channel = conn.channel()
    try:
        channel.message_count(name)
    except NotFound:
        return False
    finally:
        channel.close()
    return True


def run(args: argparse.Namespace) -> int:
    """Print messages until the count, the timeout or a signal; the exit status."""
    exchange: str | None = args.exchange
    queue: str | None = args.queue
    keys: list[str] = args.key or []
    headers = parse_pairs(args.header, what="header")
    if not exchange and not queue:
        raise UsageError(
            "give an EXCHANGE to bind a temporary queue to, or --queue NAME to read a queue"
        )
    if keys and headers:
        raise UsageError("bind with -k KEY (direct/topic) or -H KEY=VALUE (headers), not both")
    if (keys or headers) and not exchange:
        raise UsageError("-k and -H bind to an exchange: give the EXCHANGE too")
    count: int | None = args.count
    timeout: float | None = args.timeout
    printer = MessagePrinter(sys.stdout, json_lines=args.json)
    received = 0
    stop_requested = threading.Event()
    with connect(args, "consume") as conn:
        sub = Subscriber(
            conn,
            exchange=exchange or (),
            routing_keys=keys or ("",),
            headers=headers or None,
            match=args.match,
            queue=queue,
            model=bytes,
            prefetch=args.prefetch,
        )
        try:
            sub.open()
        except NotFound:
            if exchange and not queue and _is_a_queue(conn, exchange):
                raise UsageError(
                    f"no exchange {exchange!r}, but a queue of that name: did you mean "
                    f"--queue {exchange}?"
                ) from None
            raise
        with sub:
            bound = ""
            if exchange:
                how = (
                    f"headers {dumps(headers)} (x-match {args.match})"
                    if headers
                    else ("keys " + ", ".join(repr(k) for k in keys) if keys else "key ''")
                )
                bound = f", bound to exchange {exchange!r} with {how}"
            limits = []
            if count is not None:
                limits.append(f"{count} message{'s' if count != 1 else ''}")
            if timeout is not None:
                limits.append(f"{timeout:g} s")
            until = " or ".join(limits) if limits else "Ctrl-C"
            running(args)
            status(f"consuming from queue {sub.queue_name!r}{bound}; until {until}")
            clock = conn.clock
            deadline = clock.deadline(timeout)

            def stop() -> None:
                stop_requested.set()
                sub.stop()

            with stop_on_signals(stop, "consuming"):
                while not stop_requested.is_set() and (count is None or received < count):
                    remaining = clock.left(deadline)
                    if remaining is not None and remaining <= 0:
                        break
                    wait = 0.5 if remaining is None else min(0.5, remaining)
                    limit = None if count is None else count - received
                    for message in sub.messages(timeout=wait, limit=limit):
                        received += 1
                        try:
                            printer.show(received, message)
                        except BrokenPipeError:
                            stop_requested.set()
                        if stop_requested.is_set() or (
                            deadline is not None and clock.now() >= deadline
                        ):
                            break
    if count is not None and received < count and not stop_requested.is_set():
        raise CommandFailed(
            f"timed out after {timeout:g} s: received {received} of {count} messages"
        )
    noun = "message" if received == 1 else "messages"
    status(f"received {received} {noun}")
    return EXIT_OK


def register(command: AddCommand) -> None:
    """Add ``hutch consume`` and its options to the parser."""
    c = command(
        "consume",
        "print messages as they arrive",
        "Bind a temporary queue (server-named, exclusive, deleted on exit) to EXCHANGE and "
        "print every message it receives: routing key, headers and body. Or read an existing "
        "queue with --queue (its messages are acked, i.e. removed). Stops after --count "
        "messages, after --timeout seconds, or on Ctrl-C. A status line on stderr says when "
        "the queue is bound.",
        """
        hutch consume amq.fanout                          # everything published to it
        hutch consume amq.topic -k 'order.*' -k 'refund.#'
        hutch consume amq.headers -H format=pdf -H type=report --match any
        hutch consume --queue tasks --count 10 --json > tasks.jsonl
        hutch consume amq.topic -k '#' --timeout 5        # listen for 5 seconds
        """,
    )
    c.add_argument("exchange", metavar="EXCHANGE", nargs="?", help="exchange to bind to")
    c.add_argument(
        "-k",
        "--key",
        action="append",
        metavar="KEY",
        help="binding key (repeatable); topic patterns use * (one word) and # (zero or more)",
    )
    c.add_argument(
        "-H",
        "--header",
        "--headers",
        action="append",
        metavar="KEY=VALUE",
        help="headers-exchange match (repeatable); KEY:=JSON for typed values",
    )
    c.add_argument(
        "--match",
        choices=("all", "any"),
        default="all",
        help="x-match for -H (default: %(default)s)",
    )
    c.add_argument("-q", "--queue", metavar="NAME", help="consume this existing queue instead")
    c.add_argument("-n", "--count", type=positive_int, metavar="N", help="stop after N messages")
    c.add_argument(
        "-t",
        "--timeout",
        type=positive_float,
        metavar="S",
        help="stop after S seconds (an error if --count was not reached)",
    )
    c.add_argument("--json", action="store_true", help="print one JSON object per message")
    c.add_argument(
        "--prefetch",
        type=positive_int,
        default=100,
        metavar="N",
        help="messages the broker may send ahead (default: %(default)s, as Subscriber)",
    )
    c.set_defaults(run=run)
