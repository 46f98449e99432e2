"""``hutch publish``: publish messages and wait for the broker's confirms."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING

from hutch._cli.common import (
    EXIT_OK,
    AddCommand,
    CommandFailed,
    UsageError,
    connect,
    one_line,
    positive_float,
    status,
)
from hutch._cli.output import (
    BINARY_TYPE,
    TEXT_TYPE,
    broken_json,
    encode_body,
    parse_pairs,
    parse_properties,
)
from hutch._exceptions import PublishError
from hutch._publisher import Publisher

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = ["register", "run"]


def _stdin_is_a_file() -> bool:
    """True when stdin is redirected from a regular file (``< report.pdf``)."""
    try:
        return sys.stdin is not None and stat.S_ISREG(os.fstat(sys.stdin.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


def _read_input(body: str | None) -> bytes:
    if body is not None and body != "-":
        if _stdin_is_a_file():
            # `hutch publish x "" report.pdf < report.pdf` would send the word "report.pdf"
            raise UsageError(
                f"BODY {body!r} given and stdin is a file: send the file with BODY '-' or "
                "without BODY (e.g. hutch publish EXCHANGE KEY --raw < file), or the text "
                "without redirecting stdin"
            )
        return os.fsencode(body)
    if sys.stdin is None:
        raise UsageError("no body given and no stdin to read it from")
    if sys.stdin.isatty():
        status("reading the body from stdin; end it with Ctrl-D")
    return sys.stdin.buffer.read()


def _bodies(args: argparse.Namespace) -> list[tuple[bytes, str]]:
    fmt: str = args.format
    from_stdin = args.body is None or args.body == "-"
    data = _read_input(args.body)
    if args.lines:
        chunks = [line.rstrip(b"\r") for line in data.split(b"\n")]
        chunks = [c for c in chunks if c.strip()]
        if not chunks:
            raise UsageError("--lines: the input has no non-empty lines")
        encoded = [encode_body(c, fmt, what=f"line {i}") for i, c in enumerate(chunks, 1)]
        for i, (chunk, content_type) in enumerate(encoded, 1):
            _warn_broken_json(chunk, content_type, fmt, f"line {i}")
        return encoded
    body, content_type = encode_body(data, fmt)
    _warn_broken_json(body, content_type, fmt, "the body")
    if from_stdin and content_type != BINARY_TYPE and body.endswith(b"\n"):
        # `echo text | hutch publish ...`: the newline is the shell's, not the message's
        body = body[:-2] if body.endswith(b"\r\n") else body[:-1]
    return [(body, content_type)]


def _warn_broken_json(body: bytes, content_type: str, fmt: str, what: str) -> None:
    if fmt != "auto" or content_type != TEXT_TYPE:
        return
    problem = broken_json(body)
    if problem is not None:
        status(
            f"warning: {what} looks like JSON but is not valid JSON ({problem}); it is sent "
            "as text/plain. Use --json to refuse such a body, --text to send text quietly"
        )


def run(args: argparse.Namespace) -> int:
    """Publish the message(s) and print their ids; the exit status."""
    headers = parse_pairs(args.header, what="header")
    properties = parse_properties(args.property)
    if args.mandatory and args.no_confirm:
        raise UsageError("--mandatory needs confirms: drop --no-confirm")
    if args.lines and "message_id" in properties:
        raise UsageError("--lines gives every message its own message_id; do not set one")
    bodies = _bodies(args)
    exchange: str = args.exchange
    routing_key: str = args.routing_key
    failures: list[str] = []
    with (
        connect(args, "publish") as conn,
        Publisher(
            conn,
            exchange=exchange,
            routing_key=routing_key,
            confirm=not args.no_confirm,
            persistent=not args.transient,
            mandatory=args.mandatory,
            timeout=args.timeout,
        ) as pub,
    ):
        if len(bodies) == 1:
            data, content_type = bodies[0]
            props = {"content_type": content_type, **properties}
            print(pub.publish(data, headers=headers or None, **props), flush=True)
        else:
            pending: list[tuple[str, Future[None]]] = []
            for data, content_type in bodies:
                message_id = uuid.uuid4().hex
                props = {"content_type": content_type, "message_id": message_id, **properties}
                pending.append(
                    (message_id, pub.publish_async(data, headers=headers or None, **props))
                )
            for index, (message_id, future) in enumerate(pending, 1):
                try:
                    future.result(args.timeout)
                except PublishError as exc:
                    failures.append(f"line {index}: {one_line(exc)}")
                except (TimeoutError, FutureTimeout):
                    failures.append(f"line {index}: no confirm within {args.timeout:g} s")
                else:
                    print(message_id, flush=True)
    count = len(bodies)
    where = f"exchange {exchange!r}" if exchange else "the default exchange"
    if failures:
        raise CommandFailed(
            f"{len(failures)} of {count} messages were not accepted; first: {failures[0]}"
        )
    how = "sent without confirms" if args.no_confirm else "confirmed by the broker"
    noun = "message" if count == 1 else "messages"
    status(f"published {count} {noun} to {where} with routing key {routing_key!r}, {how}")
    return EXIT_OK


def register(command: AddCommand) -> None:
    """Add ``hutch publish`` and its options to the parser."""
    p = command(
        "publish",
        "publish a message (confirmed by the broker)",
        "Publish a message to an exchange and wait until the broker confirms it. The body "
        "comes from the BODY argument, or stdin when BODY is '-' or missing. By default valid "
        "JSON is sent as application/json, other UTF-8 as text/plain and anything else as "
        "application/octet-stream; --json, --text and --raw force one. The message id is "
        "printed on stdout.",
        """
        hutch publish amq.topic order.created '{"id": 1, "item": "book"}'
        hutch publish "" tasks hello --mandatory       # default exchange: key = queue
        echo '{"level": "info"}' | hutch publish amq.fanout ""
        hutch publish amq.headers "" --raw -H format=pdf -H pages:=12 < report.pdf
        hutch publish amq.direct rpc '[1, 2]' -p reply_to=replies -p correlation_id=42
        hutch consume -q jobs.dead --json -t 2 | jq -c .body | hutch publish "" jobs --lines
        """,
    )
    p.add_argument("exchange", metavar="EXCHANGE", help="exchange name; '' is the default exchange")
    p.add_argument(
        "routing_key", metavar="ROUTING_KEY", nargs="?", default="", help="(default: '')"
    )
    p.add_argument("body", metavar="BODY", nargs="?", help="the body; '-' or missing: stdin")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="format", action="store_const", const="json", help="JSON body")
    fmt.add_argument("--text", dest="format", action="store_const", const="text", help="text body")
    fmt.add_argument("--raw", dest="format", action="store_const", const="raw", help="raw bytes")
    p.set_defaults(format="auto")
    p.add_argument(
        "-H",
        "--header",
        action="append",
        metavar="KEY=VALUE",
        help="a header; KEY:=JSON for a typed value (pages:=3, urgent:=true)",
    )
    p.add_argument(
        "-p",
        "--property",
        action="append",
        metavar="NAME=VALUE",
        help="an AMQP property: correlation_id, reply_to, expiration (ms), priority, "
        "message_id, type, app_id, timestamp, content_type...",
    )
    p.add_argument("--lines", action="store_true", help="publish each non-empty line as a message")
    p.add_argument(
        "--mandatory", action="store_true", help="fail if no queue is bound for the routing key"
    )
    p.add_argument("--transient", action="store_true", help="not persistent (delivery_mode 1)")
    p.add_argument("--no-confirm", action="store_true", help="do not wait for publisher confirms")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the confirm (default: %(default)g, as Publisher)",
    )
    p.set_defaults(run=run)
